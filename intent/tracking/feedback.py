"""Users' feedback on a detection's run (contract B): written on the run after the fact."""

from __future__ import annotations

from intentsite import contract

from .store import TrackingPermanentError, tracking_client


def run_feedback_log(*, run_id: str, expected_intent: str, is_correct: bool, comment: str, timestamp_ms: int) -> None:
    """Write a user's feedback on a detection's run; idempotent (a retry writes the same values).

    The metric's timestamp is the feedback's own time, so a newer feedback is always MLflow's latest
    value. A feedback without comment removes the comment an earlier one left.
    """
    from mlflow.entities import Metric, RunTag
    from mlflow.exceptions import MlflowException

    client = tracking_client()
    try:
        run = client.get_run(run_id)
        tags = [RunTag(contract.EXPECTED_INTENT, expected_intent)]
        if comment:
            tags.append(RunTag(contract.FEEDBACK_COMMENT, comment[:contract.FEEDBACK_COMMENT_MAX]))
        client.log_batch(run_id, metrics=[Metric(contract.IS_CORRECT, 1.0 if is_correct else 0.0, timestamp_ms, 0)],
                         tags=tags)
        if not comment and contract.FEEDBACK_COMMENT in run.data.tags:
            client.delete_tag(run_id, contract.FEEDBACK_COMMENT)
    except MlflowException as exc:
        if exc.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
            raise TrackingPermanentError(str(exc)) from exc
        raise
