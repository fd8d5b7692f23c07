"""The program's values: what a detection takes and answers, and how an LM is configured.

Free of DSPy and scikit-learn at import time, so what only reads or records a detection (the tracking
payload, the admin, Celery's tracking tasks) does not pay for loading them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from .circuit import CircuitConfig

if TYPE_CHECKING:
    import dspy

LOCAL_MODEL_NAME = "local/tfidf-linear"


@dataclass(frozen=True)
class DetectionInput:
    message: str
    user_role: str = ""
    current_module: str = ""
    current_tab: str = ""


class DetectionStatus(StrEnum):
    SUCCESS = "success"
    ERROR = "error"  # the LM failed (the local backend answered), or answered an intent outside the catalog


@dataclass(frozen=True)
class Detection:
    intent: str
    confidence: float
    requires_workflow: bool
    workflow_template: str | None
    agent_template: str | None
    reasoning: str
    model_name: str  # the configured model
    prompt_version: str
    category_source: str
    fallback_used: bool
    response_time_ms: float
    status: DetectionStatus = DetectionStatus.SUCCESS
    error_category: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    available_workflow_templates: int = 0
    available_agent_templates: int = 0
    lm_usage: dict[str, Any] = field(default_factory=dict)
    answered_by: str = ""  # the model whose answer this is: model_name, or the local backend when it fell back
    # The local model's ranking (intent, probability), best first, up to 5: the answer's alternatives when the local
    # backend answered, a second opinion beside an LM's answer (`local_intent` is then what it would have answered).
    alternatives: tuple[tuple[str, float], ...] = ()
    local_intent: str | None = None
    # What the trace shows of each step (raw here, in memory only: the tracking payload redacts it): the LM call
    # ({"messages": [{role, content}], "response": str, "elapsed_ms"}) when there was one, the local model's time.
    lm_call: dict[str, Any] | None = None
    local_ms: float | None = None


@dataclass
class LMSettings:
    model: str
    api_base: str | None = None
    api_key: str | None = None
    timeout_s: float = 10.0
    max_tokens: int = 1000
    num_retries: int = 0
    engine: str = "auto"
    circuit: CircuitConfig = field(default_factory=CircuitConfig)

    def build(self) -> dspy.LM:
        import dspy  # here, not at import: what only reads a Detection need not load DSPy

        kwargs: dict[str, Any] = {"timeout": self.timeout_s}
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self.api_key:
            kwargs["api_key"] = self.api_key
        return dspy.LM(
            self.model,
            cache=False,
            num_retries=self.num_retries,
            max_tokens=self.max_tokens,
            engine=self.engine,
            **kwargs,
        )
