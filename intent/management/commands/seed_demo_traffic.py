"""Send a month (by default) of demo traffic through detection, tracking and feedback, then mirror it for analytics."""

from __future__ import annotations

import logging
import os
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from analytics.mirror.sync import runs_refresh
from intent.services.demo import DemoTrafficError, demo_traffic_seed, experiment_runs_exist

# One warning per failed LM call is what a server should log; here they are made on purpose, by the hundred.
DETECTOR_LOGGER = "intent.program.detector"
SYNC_LOGGER = "analytics.mirror.sync"  # its summary line; the command prints its own


def _bounded(low: int, high: int):
    def parse(value: str) -> int:
        number = int(value)
        if not low <= number <= high:
            raise ValueError
        return number

    parse.__name__ = f"integer {low}-{high}"
    return parse


def _share(value: str) -> float:
    share = float(value)
    if not 0 <= share <= 1:
        raise ValueError
    return share


_share.__name__ = "share 0-1"


class Command(BaseCommand):
    help = ("Send realistic demo traffic (CLINC150 test utterances, roles, modules, tabs, some out-of-scope, some "
            "LM failures, some feedback) through the detection service, write its MLflow runs and mirror them, "
            "with start times spread over the last --days days. Refuses when the experiment already holds runs.")

    def add_arguments(self, parser):
        parser.add_argument("--days", type=_bounded(1, 365), default=30, help=(
            "Days of traffic, ending now (1-365); the mirror keeps ANALYTICS_RAW_RETENTION_DAYS (90) of them."))
        parser.add_argument("--per-day", type=_bounded(1, 10_000), default=200,
                            help="Detections per day on average (1-10,000; default 200).")
        parser.add_argument("--seed", type=int, default=0, help="Random seed (default 0): same seed, same messages and context.")
        parser.add_argument("--user", default=os.environ.get("DEMO_USERNAME", "admin"),
                            help="Who asks and gives feedback (default: create_demo_user's, admin).")
        parser.add_argument("--lm-share", type=_share, default=0.10,
                            help="Share sent through an unreachable LM, answered by the local fallback (0.10).")
        parser.add_argument("--oos-share", type=_share, default=0.08, help="Share of out-of-scope messages (0.08).")
        parser.add_argument("--feedback-share", type=_share, default=0.05,
                            help="Share of detections given feedback with the true intent (0.05).")
        store = parser.add_mutually_exclusive_group()
        store.add_argument("--force", action="store_true", help="Seed even when the experiment already holds runs.")
        store.add_argument("--if-empty", action="store_true",
                           help="When the experiment already holds runs, say so and exit successfully (make demo).")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar (logs, CI).")

    def handle(self, *args, **options):
        started = time.monotonic()
        experiment = settings.MLFLOW_EXPERIMENT_NAME
        if not options["force"] and experiment_runs_exist():
            message = f"Experiment {experiment!r} already holds runs: no demo traffic seeded"
            if options["if_empty"]:
                self.stdout.write(f"{message}.")
                return
            raise CommandError(f"{message} (--force adds more).")
        try:
            user = get_user_model().objects.get(username=options["user"])
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user {options['user']!r}: run `manage.py create_demo_user` first, "
                               f"or pass --user") from None

        total = options["days"] * options["per_day"]
        self.stdout.write(f"Seeding {total:,} detections over {options['days']} days into {experiment!r}...")
        bar = None if options["no_progress"] else tqdm(total=total, unit="det", file=self.stderr._out,
                                                        dynamic_ncols=True, disable=None)  # off when not a tty
        loggers = {logging.getLogger(DETECTOR_LOGGER): logging.ERROR, logging.getLogger(SYNC_LOGGER): logging.WARNING}
        levels = {logger: logger.level for logger in loggers}
        for logger, level in loggers.items():
            logger.setLevel(level)
        try:
            result = demo_traffic_seed(
                days=options["days"], per_day=options["per_day"], user=user, seed=options["seed"],
                lm_share=options["lm_share"], oos_share=options["oos_share"],
                feedback_share=options["feedback_share"],
                progress=None if bar is None else lambda done, _total: bar.update(done - bar.n),
            )
            # The runs started in the past, behind the mirror's watermark: a refresh reads them wherever they are.
            sync = runs_refresh(run_ids=result.run_ids)
        except DemoTrafficError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            for logger, level in levels.items():
                logger.setLevel(level)
            if bar is not None:
                bar.close()
        mirrored = "not now: another sync holds the experiment (`manage.py sync_mlflow_runs --full` mirrors them)" if sync.skipped else (
            f"{sync.added + sync.updated:,} runs mirrored in {sync.seconds:.1f} s")
        self.stdout.write(
            f"Demo traffic from {result.since:%Y-%m-%d %H:%M} to {result.until:%Y-%m-%d %H:%M} UTC:\n"
            f"  detections     {result.detections:,} ({result.out_of_scope_sent:,} out-of-scope messages, "
            f"{result.out_of_scope_detected:,} answered out_of_scope)\n"
            f"  LM failures    {result.lm_failures:,} (lm_unavailable, answered by the local fallback)\n"
            f"  feedback       {result.feedback:,} (true intents, by {user.username})\n"
            f"  runs written   {result.runs_written:,}"
            + (f" ({result.not_written:,} left to the worker)" if result.not_written else "") + "\n"
            f"  mirror         {mirrored}\n"
            f"  took           {time.monotonic() - started:.1f} s (seeding {result.seconds:.1f} s)"
        )
