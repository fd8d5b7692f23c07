"""DetectIntent run on a language model (any `dspy.LM`), with its answer held to the catalog."""

from __future__ import annotations

import math

import dspy

from .catalog import OUT_OF_SCOPE, Catalog
from .signature import DetectIntent


class LMIntentDetector(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.detect = dspy.Predict(DetectIntent)

    def forward(
        self,
        *,
        message: str,
        catalog: Catalog,
        user_role: str = "",
        current_module: str = "",
        current_tab: str = "",
    ) -> dspy.Prediction:
        raw = self.detect(
            message=message,
            user_role=user_role,
            current_module=current_module,
            current_tab=current_tab,
            intent_catalog=catalog.prompt_intents(),
            workflow_templates=catalog.prompt_templates(catalog.workflow_templates),
            agent_templates=catalog.prompt_templates(catalog.agent_templates),
        )
        return held_to_catalog(raw, catalog)


def held_to_catalog(raw: dspy.Prediction, catalog: Catalog) -> dspy.Prediction:
    """Coerce an LM answer into the catalog: an unknown intent becomes out_of_scope, flagged."""
    intent = _normalise(raw.intent)
    invalid_output = False
    if intent in {"oos", "out-of-scope", "none", ""}:
        intent = OUT_OF_SCOPE
    elif intent != OUT_OF_SCOPE and catalog.get(intent) is None:
        invalid_output = True
        intent = OUT_OF_SCOPE
    confidence = _clamp(raw.confidence)
    workflow_names = {t.name for t in catalog.workflow_templates}
    agent_names = {t.name for t in catalog.agent_templates}
    workflow_template = _normalise(raw.workflow_template)
    agent_template = _normalise(raw.agent_template)
    prediction = dspy.Prediction(
        intent=intent,
        confidence=0.0 if invalid_output else confidence,
        requires_workflow=bool(raw.requires_workflow) and intent != OUT_OF_SCOPE,
        workflow_template=workflow_template if workflow_template in workflow_names else None,
        agent_template=agent_template if agent_template in agent_names else None,
        reasoning=str(raw.reasoning or ""),
        invalid_output=invalid_output,
        raw_intent=str(raw.intent),
    )
    prediction.set_lm_usage(raw.get_lm_usage() or {})
    return prediction


def _normalise(value: object) -> str:
    return str(value or "").strip().strip("`'\"").strip().lower().replace(" ", "_")


def _clamp(value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    if math.isnan(number):
        return 0.0
    return min(1.0, max(0.0, number))
