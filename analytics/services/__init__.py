"""Writes of the analytics app: the MLflow mirror's sync and its rollups."""

from .rollups import rollups_compute, rollups_refresh
from .sync import SyncLeaseLost, SyncResult, mirror_row_build, runs_refresh, runs_sync

__all__ = ["SyncLeaseLost", "SyncResult", "mirror_row_build", "rollups_compute", "rollups_refresh", "runs_refresh",
           "runs_sync"]
