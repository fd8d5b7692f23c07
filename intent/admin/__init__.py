"""Admin pages of the intent app, one module per capability: the catalog, the detection records and dead letters,
the feedback and labels, the prompt versions (`display`: how they show values)."""

from . import catalog, detections, feedback, prompt_versions

__all__ = ["catalog", "detections", "feedback", "prompt_versions"]
