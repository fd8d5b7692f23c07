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
from .recording import (
    dead_letters_replay,
    detection_record_log,
    detection_records_flush,
    detection_records_log,
    prompt_versions_log,
)

__all__ = [
    "DetectionNotFound",
    "analytics_refresh_request",
    "detection_feedback_create",
    "detection_feedback_flush",
    "detection_feedback_log",
    "detection_feedback_replay",
    "CatalogFormatError",
    "CatalogLoadResult",
    "DetectionResult",
    "catalog_load",
    "catalog_read",
    "dead_letters_replay",
    "detection_record_create",
    "detection_record_log",
    "detection_records_flush",
    "detection_records_log",
    "intent_detect",
    "prompt_versions_log",
]
