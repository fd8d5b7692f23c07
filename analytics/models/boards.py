"""Custom boards: a staff member's saved set of widgets (one metric × one breakdown × filters × period × chart)."""

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models


class Board(models.Model):
    """A board of widgets. `visibility`: `private` (its owner), `group` (also the members of `group`), `staff` (every
    staff member). Its owner, or anyone with `analytics.change_board`, changes it."""

    class Visibility(models.TextChoices):
        PRIVATE = "private"
        GROUP = "group"
        STAFF = "staff"

    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                              related_name="analytics_boards", help_text="None: one of the service's default boards.")
    visibility = models.CharField(max_length=10, choices=Visibility.choices, default=Visibility.PRIVATE)
    group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                              help_text="Shared with this group's members (visibility `group`).")
    widgets = models.JSONField(default=list, blank=True, help_text=(
        "[{title, metric, breakdown, filters, days, chart, width, height}] in display order."))
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name
