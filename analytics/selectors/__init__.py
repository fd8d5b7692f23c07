"""Reads of the analytics app: the reports (`reports`) and the pipeline's health (`health`)."""
