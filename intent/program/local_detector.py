"""The offline backend as a DSPy module: same outputs as DetectIntent, answered by LocalIntentModel."""

from __future__ import annotations

import dspy

from .catalog import OUT_OF_SCOPE, Catalog
from .local_model import LocalIntentModel


class LocalIntentDetector(dspy.Module):
    def __init__(self, model: LocalIntentModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        *,
        message: str,
        catalog: Catalog,
        user_role: str = "",
        current_module: str = "",
        current_tab: str = "",
    ) -> dspy.Prediction:
        prediction = self.model.predict(message)
        intent = prediction.intent
        spec = catalog.get(intent)
        workflow_template, agent_template = (
            catalog.templates_for(intent, module=current_module) if spec else (None, None)
        )
        ranked = ", ".join(f"{c.intent} {c.probability:.2f}" for c in prediction.candidates[:3])
        if prediction.similarity is None:
            features, score = "TF-IDF n-grams and word vectors", f"probability {prediction.confidence:.2f}"
        else:
            features = "TF-IDF n-grams, word vectors and its sentence embedding"
            score = (f"probability {prediction.confidence:.2f} x cosine {prediction.similarity:.2f} to the examples "
                     f"of {prediction.candidates[0].intent} = {prediction.oos_score:.2f}")
        if intent == OUT_OF_SCOPE:
            reasoning = (f"Out of scope: {score}, below the threshold {self.model.config.oos_threshold:.2f} "
                         f"(best: {ranked}).")
        else:
            reasoning = f"Closest catalog intent by {features} (top: {ranked}; {score})."
        return dspy.Prediction(
            intent=intent,
            confidence=float(prediction.confidence),
            requires_workflow=bool(spec.requires_workflow) if spec else False,
            workflow_template=workflow_template,
            agent_template=agent_template,
            reasoning=reasoning,
            invalid_output=False,
            candidates=prediction.candidates,
        )
