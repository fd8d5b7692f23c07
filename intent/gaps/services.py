"""A gap-mining run over the period's stored messages, kept in the database; a cluster turned into an intent."""

from __future__ import annotations

import time
from datetime import UTC, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify

from intentsite.contract import OUT_OF_SCOPE

from ..models import DetectionDetail, GapCluster, GapMining, IntentCategory, IntentExample
from .mining import Message, messages_cluster


class MessagesNotStored(Exception):
    """INTENT_STORE_MESSAGES=0: there is no text to mine."""


def gaps_mine(*, days: int = 30, now=None) -> GapMining:
    """Cluster the last `days` days' messages that were out of scope, matched no template, or had a confidence
    under GAPS_LOW_CONFIDENCE; store the run and its clusters (GAPS_KEEP_RUNS runs are kept)."""
    if not settings.INTENT_STORE_MESSAGES:
        raise MessagesNotStored("Messages are not stored (INTENT_STORE_MESSAGES=0): there is nothing to mine.")
    started = time.perf_counter()
    now = now or timezone.now()
    period = DetectionDetail.objects.filter(created_at__gt=now - timedelta(days=days), created_at__lte=now) \
        .exclude(message="")
    candidates = period.filter(Q(detected_intent=OUT_OF_SCOPE) | Q(template_matched=False)
                               | Q(confidence__lt=settings.GAPS_LOW_CONFIDENCE))
    rows = list(candidates.order_by("created_at", "id").values_list("message", "created_at", "detected_intent"))
    messages = [Message(text=text, day=created.astimezone(UTC).date(), detected_intent=intent)
                for text, created, intent in rows]
    mined = messages_cluster(messages, sample_size=settings.GAPS_SAMPLE_SIZE,
                             min_cluster_size=settings.GAPS_MIN_CLUSTER_SIZE)
    with transaction.atomic():
        mining = GapMining.objects.create(computed_at=now, days=days, detections=period.count(),
                                          candidates=len(messages), clustered=mined.clustered,
                                          seconds=round(time.perf_counter() - started, 3))
        GapCluster.objects.bulk_create([
            GapCluster(mining=mining, rank=rank, size=cluster.size, share=cluster.size / len(messages),
                       suggested_name=cluster.suggested_name, top_terms=cluster.top_terms, examples=cluster.examples,
                       trend=[{"day": day.isoformat(), "count": count} for day, count in sorted(cluster.trend.items())],
                       detected_intents=[{"intent": intent, "count": count}
                                         for intent, count in cluster.detected_intents])
            for rank, cluster in enumerate(mined.clusters[:settings.GAPS_MAX_CLUSTERS], start=1)])
        stale = GapMining.objects.order_by("-computed_at", "-id").values_list("pk", flat=True)[settings.GAPS_KEEP_RUNS:]
        GapMining.objects.filter(pk__in=list(stale)).delete()
    return mining


class ClusterAlreadyAdopted(Exception):
    pass


def gap_cluster_adopt(*, cluster: GapCluster, module: str = "") -> IntentCategory:
    """A new intent from a cluster: its suggested name (made unique), its examples, inactive until a person turns it
    on (the catalog, and so the prompt version, changes then)."""
    if cluster.adopted_as_id:
        raise ClusterAlreadyAdopted(f"Cluster {cluster.suggested_name} is intent {cluster.adopted_as} already.")
    base = slugify(cluster.suggested_name).replace("-", "_")[:90] or "new_intent"
    name, n = base, 2
    while IntentCategory.objects.filter(name=name).exists():
        name, n = f"{base}_{n}", n + 1
    with transaction.atomic():
        category = IntentCategory.objects.create(
            name=name, module=module or "new", is_active=False,
            description=f"From template-gap mining: {', '.join(cluster.top_terms[:5])} ({cluster.size} messages).")
        IntentExample.objects.bulk_create([IntentExample(category=category, text=text[:1000])
                                           for text in cluster.examples])
        cluster.adopted_as = category
        cluster.save(update_fields=["adopted_as"])
    return category
