"""The intent app's tables: the catalog, detections and their outboxes, labels and details (`detections`), and live
prompt experiments (`experiments`)."""

from .detections import (
    AgentTemplate,
    DeadLetter,
    DetectionDetail,
    DetectionFeedback,
    DetectionLabel,
    DetectionRecord,
    GapCluster,
    GapMining,
    IntentCategory,
    IntentExample,
    Outbox,
    PromptVersion,
    Template,
    TimestampedModel,
    WorkflowTemplate,
)
from .experiments import Experiment, ShadowDetection

__all__ = [
    "AgentTemplate",
    "DeadLetter",
    "DetectionDetail",
    "DetectionFeedback",
    "DetectionLabel",
    "DetectionRecord",
    "Experiment",
    "GapCluster",
    "GapMining",
    "IntentCategory",
    "IntentExample",
    "Outbox",
    "PromptVersion",
    "ShadowDetection",
    "Template",
    "TimestampedModel",
    "WorkflowTemplate",
]
