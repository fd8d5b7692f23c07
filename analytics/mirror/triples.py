"""Rollups of three dimensions, kept where a saved widget needs them.

A breakdown under two filters (intents within `module=banking` and `user_role=agent`) needs the runs of each day
grouped by the three dimensions. Rolled up for every triple, that is 45 k rows a day on the bench's uniform data
(nearly a row per run, 7x the other rollups): so a triple is rolled up only once a board asks for it. The boards'
services list the triples their widgets need (`triples_request`); each sync of an experiment then builds the
triples it does not have yet from the raw rows of the days that still have them (`triples_build`, under the
sync's lease, folded as those days' rows fold), drops those no board needs any more, and from then on its
recomputes and additions keep the built ones exact like any other dimension (`rollups.triples_kept`). The reports
read a built triple as they read a pair (`analytics.reports.cells`); until it is built, the raw rows answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date

from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from ..models import TRIPLES, DailyRollup, MirroredRun, RollupTriple, RollupTripleBuilt
from .bulk import chunked
from .rollups import rollups_extend

# Days read per step of a build: ~4 x a day's runs in memory at once, as the daily recompute does.
BUILD_DAYS = 4


def triples_request(*, dimensions: Iterable[str]) -> list[str]:
    """Make the triples kept exactly these (what the saved widgets need, from the boards' services): the next sync of
    each experiment builds the new ones and drops the others. Returns the triples now requested."""
    wanted = sorted(set(dimensions) & TRIPLES.keys())
    if set(RollupTriple.objects.values_list("dimension", flat=True)) == set(wanted):
        return wanted  # the usual case (each periodic sync task asks): no write, no lock taken
    with transaction.atomic():
        RollupTriple.objects.exclude(dimension__in=wanted).delete()
        known = set(RollupTriple.objects.values_list("dimension", flat=True))
        RollupTriple.objects.bulk_create([RollupTriple(dimension=triple) for triple in wanted if triple not in known],
                                         ignore_conflicts=True)
    return wanted


def triples_usable(*, experiment_id: str) -> dict[str, date | None]:
    """The experiment's built triples: name -> the first day their rows cover (None: every day with rollups)."""
    return dict(RollupTripleBuilt.objects.filter(experiment_id=experiment_id).values_list("dimension", "built_from"))


def triples_build(*, experiment_id: str, renew: Callable[[], None] = lambda: None) -> dict[str, int]:
    """Build the requested triples the experiment does not have (rows for every day that has raw rows), and drop the
    built ones no longer requested. Call it holding the experiment's sync lease, after the dirty days' rollups are
    recomputed; `renew()` is called between steps (it renews the lease). Returns rows written (or removed: negative)
    per triple."""
    requested = set(RollupTriple.objects.values_list("dimension", flat=True))
    built = set(RollupTripleBuilt.objects.filter(experiment_id=experiment_id).values_list("dimension", flat=True))
    done: dict[str, int] = {}
    for triple in sorted(built - requested):
        with transaction.atomic():
            removed, _ = DailyRollup.objects.filter(experiment_id=experiment_id, dimension=triple).delete()
            RollupTripleBuilt.objects.filter(experiment_id=experiment_id, dimension=triple).delete()
        done[triple] = -removed
        renew()
    new = sorted(requested - built)
    if not new:
        return done
    days = sorted(MirroredRun.objects.filter(experiment_id=experiment_id).values_list("day", flat=True)
                  .distinct().order_by())
    for chunk in chunked(days, BUILD_DAYS):
        rollups_extend(experiment_id=experiment_id, days=chunk, dimensions=new)
        renew()
    # Days before the first raw one that have rollups (their raw rows purged): no rows of the new triples there.
    built_from = days[0] if days and DailyRollup.objects.filter(experiment_id=experiment_id,
                                                              day__lt=days[0]).exists() else None
    rows = dict(DailyRollup.objects.filter(experiment_id=experiment_id, dimension__in=new).order_by()
                .values_list("dimension").annotate(Count("id")))
    if connection.vendor == "postgresql":
        # Planner statistics for the new rows now, not when autovacuum gets to them: until then PostgreSQL plans the
        # triple's reads as if it had no rows (measured: 100 ms for a widget that takes 17 ms after ANALYZE).
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {DailyRollup._meta.db_table}")
    now = timezone.now()
    with transaction.atomic():
        for triple in new:
            done[triple] = rows.get(triple, 0)
            RollupTripleBuilt.objects.update_or_create(experiment_id=experiment_id, dimension=triple, defaults={
                "built_from": built_from, "built_at": now, "rows": done[triple]})
    return done
