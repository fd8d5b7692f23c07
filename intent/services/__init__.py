"""Writes and side effects of the intent app (one module per concern, re-exported here)."""

from .catalog import CatalogFormatError, CatalogLoadResult, catalog_load, catalog_read
from .detection import DetectionResult, detection_record_create, intent_detect
from .recording import (
    dead_letters_replay,
    detection_record_log,
    detection_records_flush,
    detection_records_log,
    prompt_versions_log,
)

__all__ = [
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
