"""Intent detection as a DSPy program. Imports nothing from Django: usable from a notebook too.

Names load on first use (PEP 562): `from intent.program import OUT_OF_SCOPE` or `Detection` does not
import DSPy or scikit-learn (~2-3 s a process), which only detecting, evaluating and optimizing need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_HOMES = {
    "FALLBACK_CATALOG": "catalog",
    "OUT_OF_SCOPE": "catalog",
    "Catalog": "catalog",
    "IntentSpec": "catalog",
    "TemplateSpec": "catalog",
    "LOCAL_MODEL_NAME": "types",
    "Detection": "types",
    "DetectionInput": "types",
    "LMSettings": "types",
    "IntentDetector": "detector",
    "LMIntentDetector": "lm_detector",
    "LocalIntentDetector": "local_detector",
    "DetectIntent": "signature",
}

__all__ = [  # noqa: RUF022 (the order of _HOMES)
    "FALLBACK_CATALOG", "OUT_OF_SCOPE", "Catalog", "IntentSpec", "TemplateSpec",
    "LOCAL_MODEL_NAME", "Detection", "DetectionInput", "LMSettings",
    "IntentDetector", "LMIntentDetector", "LocalIntentDetector", "DetectIntent",
]

if TYPE_CHECKING:
    from .catalog import FALLBACK_CATALOG, OUT_OF_SCOPE, Catalog, IntentSpec, TemplateSpec
    from .detector import IntentDetector
    from .lm_detector import LMIntentDetector
    from .local_detector import LocalIntentDetector
    from .signature import DetectIntent
    from .types import LOCAL_MODEL_NAME, Detection, DetectionInput, LMSettings


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
