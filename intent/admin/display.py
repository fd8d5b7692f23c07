"""How the intent admin shows values: times in UTC, short ids, intents that wrap, links to MLflow and the mirror."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

from django.conf import settings
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

EMPTY = "-"  # what the admin shows for an empty value (a read-only field would show `None`)


def utc_time(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else EMPTY


def short_id(value) -> str:
    """An id as its first 8 characters, the whole id in the title (and in searches: they match a prefix)."""
    full = str(value)
    return format_html('<span class="intent-id" title="{}">{}</span>', full, full[:8])


def breakable(value: str | None):
    """An intent that may wrap after its underscores (`international_visa`), so that it does not widen the list."""
    if not value:
        return EMPTY
    return format_html_join(mark_safe("_<wbr>"), "{}", ((part,) for part in value.split("_")))


def mlflow_run_url(run_id: str) -> str | None:
    """The run in the MLflow UI, by its direct route (a record does not know its experiment's id)."""
    return f"{settings.MLFLOW_UI_URL}/#/runs/{run_id}" if settings.MLFLOW_UI_URL and run_id else None


def request_url(changelist: str, request_id) -> str:
    """A changelist filtered by request id: how the records and the mirror (`analytics`) link to each other."""
    return f"{reverse(changelist)}?{urlencode({'request_id': str(request_id)})}"


def links_join(*links: tuple[str | None, str, str]) -> str:
    """(url, text, title) links joined by dots; those without a url left out."""
    shown = [(url, title, text) for url, text, title in links if url]
    if not shown:
        return EMPTY
    return format_html_join(" · ", '<a href="{}" title="{}">{}</a>', shown)
