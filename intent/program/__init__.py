"""Intent detection as a DSPy program. Imports nothing from Django: usable from a notebook too."""

from .catalog import FALLBACK_CATALOG, OUT_OF_SCOPE, Catalog, IntentSpec, TemplateSpec
from .detector import LOCAL_MODEL_NAME, Detection, DetectionInput, IntentDetector, LMSettings
from .lm_detector import LMIntentDetector
from .local_detector import LocalIntentDetector
from .signature import DetectIntent

__all__ = [
    "FALLBACK_CATALOG",
    "LOCAL_MODEL_NAME",
    "OUT_OF_SCOPE",
    "Catalog",
    "DetectIntent",
    "Detection",
    "DetectionInput",
    "IntentDetector",
    "IntentSpec",
    "LMIntentDetector",
    "LMSettings",
    "LocalIntentDetector",
    "TemplateSpec",
]
