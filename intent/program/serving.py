"""The detector as MLflow serves it, outside Django: a pyfunc model for the local backend, a DSPy module for an LM.

`intent.tracking.registry` logs these with `intent/program` as their code, so a process that has neither the
repository nor Django (`mlflow models serve -m models:/intent-detector@production`) answers exactly what
`IntentDetector.detect` answers in the service.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import dspy
import mlflow.pyfunc
import pandas as pd

from .catalog import Catalog, IntentSpec, TemplateSpec
from .lm_detector import LMIntentDetector

LOCAL_MODEL_ARTIFACT, CATALOG_ARTIFACT = "local_model", "catalog"
INPUT_COLUMNS = ("message", "user_role", "current_module", "current_tab")  # DetectionInput's fields
OUTPUT_COLUMNS = ("intent", "confidence", "status", "prompt_version", "workflow_template", "agent_template")


def catalog_as_dict(catalog: Catalog) -> dict[str, Any]:
    """The catalog as JSON-able data (`Catalog.version` is the same once read back)."""
    return {
        "intents": [asdict(intent) for intent in catalog.intents],
        "workflow_templates": [asdict(template) for template in catalog.workflow_templates],
        "agent_templates": [asdict(template) for template in catalog.agent_templates],
        "source": catalog.source,
    }


def catalog_from_dict(data: dict[str, Any]) -> Catalog:
    def templates(key: str) -> tuple[TemplateSpec, ...]:
        return tuple(TemplateSpec(**{**t, "intents": tuple(t["intents"]),
                                     "trigger_examples": tuple(t["trigger_examples"])}) for t in data[key])

    return Catalog(
        intents=tuple(IntentSpec(**{**intent, "examples": tuple(intent["examples"])}) for intent in data["intents"]),
        workflow_templates=templates("workflow_templates"),
        agent_templates=templates("agent_templates"),
        source=data["source"],
    )


class LocalDetectorModel(mlflow.pyfunc.PythonModel):
    """The local backend's `IntentDetector`, one row of `INPUT_COLUMNS` in, one row of `OUTPUT_COLUMNS` out."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from .detector import IntentDetector
        from .local_model import LocalIntentModel

        catalog = catalog_from_dict(json.loads(Path(context.artifacts[CATALOG_ARTIFACT]).read_text()))
        self.detector = IntentDetector(catalog=catalog, lm_settings=None,
                                       local_model=LocalIntentModel.load(context.artifacts[LOCAL_MODEL_ARTIFACT]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from .types import DetectionInput

        rows = []
        for record in model_input.to_dict(orient="records"):
            detection = self.detector.detect(DetectionInput(**{name: _text(record.get(name)) for name in INPUT_COLUMNS}))
            rows.append({"intent": detection.intent, "confidence": detection.confidence,
                         "status": str(detection.status), "prompt_version": detection.prompt_version,
                         "workflow_template": detection.workflow_template, "agent_template": detection.agent_template})
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))


class CatalogBoundProgram(dspy.Module):
    """An LM program with its catalog bound: what MLflow's DSPy flavour serves gets JSON (a message and its
    context), not a `Catalog`."""

    def __init__(self, program: LMIntentDetector, catalog: Catalog) -> None:
        super().__init__()
        self.program = program
        self.catalog = catalog

    def forward(self, *, message: str, user_role: str = "", current_module: str = "",
                current_tab: str = "") -> dspy.Prediction:
        return self.program(message=message, catalog=self.catalog, user_role=_text(user_role),
                            current_module=_text(current_module), current_tab=_text(current_tab))


def _text(value: object) -> str:
    """A DataFrame cell as DetectionInput takes it: a missing optional column is '' (None or NaN once in pandas)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)
