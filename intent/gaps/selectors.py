"""The latest gap mining as plain data (analytics reads it by dotted path: it does not import intent's models)."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from ..models import GapMining


def gap_report_get(*, days: int) -> dict[str, Any]:
    """The latest mining of `days` days: `available` false (and why) without stored messages; `mining` null when
    none ran yet."""
    if not settings.INTENT_STORE_MESSAGES:
        return {"available": False, "reason": "Messages are not stored (INTENT_STORE_MESSAGES=0): nothing to mine.",
                "mining": None, "clusters": []}
    mining = GapMining.objects.filter(days=days).order_by("-computed_at", "-id").first()
    if mining is None:
        return {"available": True, "reason": "", "mining": None, "clusters": []}
    return {
        "available": True,
        "reason": "",
        "mining": {"id": mining.pk, "computed_at": mining.computed_at, "days": mining.days,
                   "detections": mining.detections, "candidates": mining.candidates, "clustered": mining.clustered,
                   "seconds": mining.seconds},
        "clusters": [
            {"id": cluster.pk, "rank": cluster.rank, "size": cluster.size, "share": cluster.share,
             "suggested_name": cluster.suggested_name, "top_terms": cluster.top_terms, "examples": cluster.examples,
             "trend": cluster.trend, "detected_intents": cluster.detected_intents,
             "adopted_as": cluster.adopted_as.name if cluster.adopted_as_id else None}
            for cluster in mining.clusters.select_related("adopted_as").order_by("rank")],
    }
