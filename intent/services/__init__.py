"""Writes and side effects of the intent app (one module per concern, re-exported here)."""

from .catalog import CatalogFormatError, CatalogLoadResult, catalog_load, catalog_read
from .detection import DetectionResult, detection_record_create, intent_detect
from .feedback import (
    DetectionNotFound,
    analytics_refresh_request,
    detection_feedback_create,
    detection_feedback_flush,
    detection_feedback_log,
    detection_feedback_replay,
)
from .prompt_versions import (
    PromptVersionNotActivatable,
    prompt_version_activate,
    prompt_version_deactivate,
    prompt_version_register,
    prompt_versions_log,
)
from .recording import (
    detection_record_log,
    detection_records_flush,
    detection_records_log,
    detection_records_replay,
)

__all__ = [
    "CatalogFormatError",
    "CatalogLoadResult",
    "DetectionNotFound",
    "DetectionResult",
    "PromptVersionNotActivatable",
    "analytics_refresh_request",
    "catalog_load",
    "catalog_read",
    "detection_feedback_create",
    "detection_feedback_flush",
    "detection_feedback_log",
    "detection_feedback_replay",
    "detection_record_create",
    "detection_record_log",
    "detection_records_flush",
    "detection_records_log",
    "detection_records_replay",
    "intent_detect",
    "prompt_version_activate",
    "prompt_version_deactivate",
    "prompt_version_register",
    "prompt_versions_log",
]
