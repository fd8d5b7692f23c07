"""Admin pages of the intent app, one module per capability (`display`: how they show values)."""

from . import catalog, detections, experiments, feedback, gaps, prompt_versions, review

__all__ = ["catalog", "detections", "experiments", "feedback", "gaps", "prompt_versions", "review"]
