"""DRF views of the analytics app: thin, one class per operation (reports.py: the analytics read from the
mirror's rollups; ops.py: health and experiment maintenance)."""
