"""The ORM mirror of MLflow runs and its rollups (filled in by the mirror issue)."""
