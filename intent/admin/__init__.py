"""Admin pages of the intent app, one module per capability (`display`: how they show values)."""

from . import catalog, detections, feedback, prompt_versions

__all__ = ["catalog", "detections", "feedback", "prompt_versions"]
