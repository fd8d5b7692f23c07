"""Deleting detection runs (and traces) older than TRACKING_MLFLOW_RETENTION_DAYS, through MLflow's API."""

from __future__ import annotations

from .store import experiment_id_get, tracking_client

PAGE = 1_000


def detection_runs_expire(*, before_ms: int, dry_run: bool = False) -> dict[str, int]:
    """Delete the detection experiment's runs that started before `before_ms` (MLflow's soft delete: `mlflow gc`
    removes them for good) and its traces older than that. Returns how many runs and traces went (the runs that
    would go, with `dry_run`; traces are not counted then)."""
    from mlflow.entities import ViewType

    client = tracking_client()
    experiment_id = experiment_id_get()
    where = f"attributes.start_time < {int(before_ms)}"
    runs, token = 0, None
    while True:
        page = client.search_runs([experiment_id], filter_string=where, run_view_type=ViewType.ACTIVE_ONLY,
                                  max_results=PAGE, page_token=token)
        runs += len(page)
        if dry_run:
            token = page.token
            if not token:
                break
            continue
        for run in page:  # deleted runs leave the active view: the next search starts at what is left
            client.delete_run(run.info.run_id)
        if len(page) < PAGE:
            break
    traces = 0 if dry_run else int(client.delete_traces(experiment_id, max_timestamp_millis=int(before_ms)) or 0)
    return {"runs": runs, "traces": traces}
