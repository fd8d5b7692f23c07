"""IntentDetector: one call answers one message, whatever the backend, and never raises.

The LM backend runs `LMIntentDetector` under `dspy.context` (DSPy's settings are thread-bound, so
nothing is configured globally); when it fails, the local backend answers and the failure is
reported as data (`fallback_used`, `error_category`), not as an exception. While the LM's circuit
breaker (`circuit.py`) is open, the LM is not called at all (`lm_circuit_open`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from functools import cached_property
from typing import Any

import dspy
from dspy.utils.callback import BaseCallback

from . import errors
from .catalog import Catalog
from .circuit import CircuitOpen, circuit_get
from .lm_detector import LMIntentDetector
from .local_detector import LocalIntentDetector
from .local_model import LocalIntentModel
from .types import LOCAL_MODEL_NAME, Detection, DetectionInput, DetectionStatus, LMSettings
from .versioning import program_state, version_hash

__all__ = ["LOCAL_MODEL_NAME", "Detection", "DetectionInput", "DetectionStatus", "IntentDetector", "LMSettings"]

logger = logging.getLogger(__name__)


class IntentDetector:
    """Detects intents over one catalog with one backend (`lm_settings=None` means local only)."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        local_model: LocalIntentModel,
        lm_settings: LMSettings | None = None,
        adapter: dspy.Adapter | None = None,
        program: LMIntentDetector | None = None,
    ) -> None:
        self.catalog = catalog
        self.local = LocalIntentDetector(local_model)
        self.lm_settings = lm_settings
        self.lm = lm_settings.build() if lm_settings else None
        self.circuit = (circuit_get(model=lm_settings.model, api_base=lm_settings.api_base, config=lm_settings.circuit)
                        if lm_settings and lm_settings.circuit.enabled else None)
        self.adapter = adapter or dspy.ChatAdapter()
        self.program = program or LMIntentDetector()

    @property
    def model_name(self) -> str:
        return self.lm_settings.model if self.lm_settings else LOCAL_MODEL_NAME

    @cached_property
    def version_description(self) -> dict[str, Any]:
        """What `prompt_version` hashes; recorded in full so a hash can always be explained."""
        if self.lm is None:
            description = {
                "backend": "local",
                "model": LOCAL_MODEL_NAME,
                "config": self.local.model.config.as_dict(),
                "catalog_version": self.catalog.version,
            }
            if self.local.model.extra_training:  # refitted on labelled data beyond the catalog
                description["extra_training"] = self.local.model.extra_training
            return description
        return {
            "backend": "lm",
            "model": self.model_name,
            "adapter": type(self.adapter).__name__,
            "program": program_state(self.program),
        }

    @cached_property
    def prompt_version(self) -> str:
        return version_hash(self.version_description)

    def detect(self, request: DetectionInput) -> Detection:
        started = time.perf_counter()
        kwargs = {
            "message": request.message,
            "catalog": self.catalog,
            "user_role": request.user_role,
            "current_module": request.current_module,
            "current_tab": request.current_tab,
        }
        capture = LMCapture()
        prediction, failure = self._lm_answer(kwargs, capture) if self.lm is not None else (None, None)
        fallback_used = prediction is None and failure is not None
        local_started = time.perf_counter()
        if prediction is None:
            prediction, failure = self._local_answer(kwargs, failure)
            local = prediction
        else:  # the LM answered: the local model's ranking beside it (~1 ms) is the review queue's second opinion
            local = self._second_opinion(request.message)
        local_ms = (time.perf_counter() - local_started) * 1000.0
        detection = self._detection(prediction, failure, fallback_used=fallback_used, local=local,
                                    elapsed_ms=(time.perf_counter() - started) * 1000.0)
        return dataclasses.replace(detection, lm_call=capture.call, local_ms=round(local_ms, 3))

    def _second_opinion(self, message: str) -> dspy.Prediction | None:
        try:
            answer = self.local.model.predict(message)
        except Exception:  # pragma: no cover - the local model failing is a bug; the LM's answer stands
            logger.exception("Local intent model failed")
            return None
        return dspy.Prediction(intent=answer.intent, candidates=answer.candidates)

    def _lm_answer(self, kwargs: dict[str, Any],
                   capture: LMCapture) -> tuple[dspy.Prediction | None, BaseException | None]:
        """The LM's answer, or why there is none; the LM's circuit breaker hears how the call went; `capture`
        keeps the call's messages and response for the trace."""
        permit = self.circuit.allow() if self.circuit is not None else 0
        if permit is None:  # skip an LM that keeps failing, without waiting for it
            return None, CircuitOpen(f"LM {self.model_name} not called: its circuit is open after repeated failures")
        prediction, failure = None, None
        try:
            with dspy.context(lm=self.lm, adapter=self.adapter, track_usage=True, callbacks=[capture]):
                prediction = self.program(**kwargs)
        except Exception as exc:  # the user always gets an answer: the local backend steps in
            logger.warning("LM %s failed (%s: %s); local fallback answers", self.model_name, type(exc).__name__, exc)
            failure = exc
        if self.circuit is not None:
            self.circuit.record(permit, failed=failure is not None
                                and errors.error_category(failure) in errors.CIRCUIT_FAILURES)
        return prediction, failure

    def _local_answer(self, kwargs: dict[str, Any],
                      failure: BaseException | None) -> tuple[dspy.Prediction, BaseException | None]:
        try:
            return self.local(**kwargs), failure
        except Exception as exc:  # pragma: no cover - the local model failing is a bug
            logger.exception("Local intent model failed")
            return _empty_prediction(), failure or exc

    def _detection(self, prediction: dspy.Prediction, failure: BaseException | None, *, fallback_used: bool,
                   local: dspy.Prediction | None, elapsed_ms: float) -> Detection:
        """The answer, with what went wrong as data: an LM failure, or an LM answer outside the catalog."""
        error_category = errors.error_category(failure) if failure is not None else None
        if failure is None and prediction.get("invalid_output"):
            error_category = errors.INVALID_OUTPUT
        return Detection(
            intent=prediction.intent,
            confidence=float(prediction.confidence),
            requires_workflow=bool(prediction.requires_workflow),
            workflow_template=prediction.workflow_template,
            agent_template=prediction.agent_template,
            reasoning=prediction.reasoning,
            model_name=self.model_name,
            prompt_version=self.prompt_version,
            category_source=self.catalog.source,
            fallback_used=fallback_used,
            response_time_ms=round(elapsed_ms, 3),
            status=DetectionStatus.ERROR if error_category else DetectionStatus.SUCCESS,
            error_category=error_category,
            error_type=type(failure).__name__ if failure is not None else (
                "InvalidOutputError" if error_category else None),
            error_message=str(failure)[:500] if failure is not None else (
                f"LM answered intent {prediction.get('raw_intent')!r}, not in the catalog" if error_category else None
            ),
            available_workflow_templates=len(self.catalog.workflow_templates),
            available_agent_templates=len(self.catalog.agent_templates),
            lm_usage=_usage(prediction),
            answered_by=self.model_name if self.lm is not None and failure is None else LOCAL_MODEL_NAME,
            alternatives=tuple((c.intent, round(float(c.probability), 6)) for c in (local.get("candidates") or ())
                               ) if local is not None else (),
            local_intent=local.intent if local is not None and local is not prediction and local.get("candidates")
            else None,
        )


class LMCapture(BaseCallback):
    """One detection's LM call, as DSPy's callbacks see it (thread-bound through `dspy.context`): the messages
    sent, the response, how long it took."""

    def __init__(self) -> None:
        self.call: dict[str, Any] | None = None
        self._started = 0.0

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._started = time.perf_counter()
        messages = inputs.get("messages") or [{"role": "user", "content": inputs.get("prompt") or ""}]
        self.call = {"messages": [{"role": str(m.get("role", "")), "content": str(m.get("content", ""))}
                                  for m in messages if isinstance(m, dict)], "response": None, "elapsed_ms": None}

    def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        if self.call is None:
            return
        self.call["elapsed_ms"] = round((time.perf_counter() - self._started) * 1000.0, 3)
        first = outputs[0] if isinstance(outputs, list) and outputs else outputs
        self.call["response"] = (first.get("text") if isinstance(first, dict) else first) if first is not None \
            else None
        if exception is not None:
            self.call["error"] = f"{type(exception).__name__}: {exception}"[:500]


def _empty_prediction() -> dspy.Prediction:
    from .catalog import OUT_OF_SCOPE

    return dspy.Prediction(intent=OUT_OF_SCOPE, confidence=0.0, requires_workflow=False, workflow_template=None,
                           agent_template=None, reasoning="The detector failed; see error_category.")


def _usage(prediction: dspy.Prediction) -> dict[str, Any]:
    usage = prediction.get_lm_usage() if hasattr(prediction, "get_lm_usage") else None
    if not usage:
        return {}
    totals: dict[str, float] = {}
    for per_model in usage.values():
        for key in ("prompt_tokens", "completion_tokens"):
            value = per_model.get(key) if isinstance(per_model, dict) else None
            if isinstance(value, (int, float)):
                totals[key] = totals.get(key, 0) + value
    return totals
