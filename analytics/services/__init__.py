"""Exports of the reports (the mirror's writes live in `analytics.mirror`)."""
