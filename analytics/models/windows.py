"""Rollups at a finer grain than a day, kept for a bounded time: what monitors read (windows of 5 minutes to 7 days).

One row per bucket (5 minutes or an hour) of one experiment and one combination of the context a monitor filters
on (module, role, configured model, prompt version), with the same counts, sums and latency sketch as
`DailyRollup` and the bucket's intents counted. Any combination of filters is then a sum of rows; no value is
folded (a bucket holds at most as many combinations as runs). The sync writes them with the daily rollups, from
the same raw rows (`analytics.mirror.windows`), and removes those older than their retention.
"""

from __future__ import annotations

from django.db import models

from .mirror import RollupAggregates

# The two grains, in minutes: 5-minute rows serve windows' edges and recent history, hourly rows the rest.
FINE_MINUTES = 5
HOURLY_MINUTES = 60


class WindowRollup(RollupAggregates):
    experiment_id = models.CharField(max_length=32)
    grain_minutes = models.PositiveSmallIntegerField(help_text="5 or 60.")
    bucket = models.DateTimeField(help_text="Start of the bucket (UTC), a multiple of the grain.")
    day = models.DateField(help_text="UTC date of the bucket: the sync recomputes whole days.")
    current_module = models.CharField(max_length=200, blank=True)
    user_role = models.CharField(max_length=200, blank=True)
    model_name = models.CharField(max_length=200, blank=True)
    prompt_version = models.CharField(max_length=64, blank=True)

    intents = models.JSONField(default=dict, blank=True, help_text="Detected intent -> runs.")
    computed_at = models.DateTimeField()

    class Meta:
        ordering = ["-bucket"]
        constraints = [models.UniqueConstraint(
            fields=["experiment_id", "grain_minutes", "bucket", "current_module", "user_role", "model_name",
                    "prompt_version"], name="windowrollup_unique")]
        indexes = [
            models.Index(fields=["experiment_id", "grain_minutes", "bucket"], name="windowrollup_read"),
            models.Index(fields=["experiment_id", "day"], name="windowrollup_day"),
        ]

    def __str__(self) -> str:
        return f"{self.bucket:%Y-%m-%d %H:%M}/{self.grain_minutes}m: {self.runs} runs"
