"""Template-gap mining now (beat does it nightly): cluster the period's messages the catalog did not serve well."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from intent.gaps.services import MessagesNotStored, gaps_mine


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=settings.GAPS_DAYS, help="The period (default GAPS_DAYS).")

    def handle(self, *args, days: int, **options):
        if not 1 <= days <= 90:
            raise CommandError("--days must be 1 to 90")
        try:
            mining = gaps_mine(days=days)
        except MessagesNotStored as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{mining.candidates:,} candidate messages of {mining.detections:,} in {days} days, "
                          f"{mining.clustered:,} clustered in {mining.seconds:.1f} s: "
                          f"{mining.clusters.count()} clusters")
        for cluster in mining.clusters.order_by("rank")[:10]:
            self.stdout.write(f"  {cluster.size:>6,}  {cluster.suggested_name:<30} {', '.join(cluster.top_terms[:5])}")
