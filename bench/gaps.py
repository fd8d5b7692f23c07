"""Benchmark: template-gap mining's clustering (`intent.gaps.mining.messages_cluster`) on N candidate messages.

    python bench/gaps.py [--messages 100000] [--repeats 3]

Messages: CLINC150's texts (train, val, test and out-of-scope; a filler word appended so that repeats differ), and
1 % about a topic absent from the catalog (pet insurance claims, as tests/intent/test_gaps.py writes them). Times
the clustering as the nightly task runs it (TF-IDF, SVD to 20 dimensions, HDBSCAN on a uniform sample of
GAPS_SAMPLE_SIZE=10,000, the rest joining their 5 nearest sampled neighbours) at N messages, and in the same process
the baseline it replaces: HDBSCAN on every message, at a size it finishes in (20,000), against the sampled way at
that size. Prints medians, the ratio, and the topic's clusters (those mostly made of injected messages) with the
share of its messages they hold. No database, no Django: only the clustering.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from intent.gaps.mining import Message, messages_cluster  # noqa: E402
from tests.gap_topics import pet_insurance_messages  # noqa: E402

CLINC = REPO / "intent" / "data" / "clinc150" / "data_full.json"
FILLERS = "please now today quickly again urgent thanks hey ok so".split()


def corpus(n: int, rng: random.Random) -> tuple[list[Message], set[int]]:
    data = json.loads(CLINC.read_text())
    pool = [text for split in ("train", "val", "test", "oos_train", "oos_val", "oos_test") for text, _ in data[split]]
    pets = pet_insurance_messages(rng, n=60)
    texts, injected = [], set()
    for i in range(n):
        if rng.random() < 0.01:
            injected.add(i)
            texts.append(rng.choice(pets))
        else:
            texts.append(f"{rng.choice(pool)} {rng.choice(FILLERS)}")
    return [Message(text=text, day=date(2026, 11, 1 + i % 30), detected_intent="out_of_scope")
            for i, text in enumerate(texts)], injected


def timed(messages: list[Message], injected: set[int], *, sample_size: int,
          repeats: int) -> tuple[float, float, tuple[int, int]]:
    seconds, recall, clusters = [], 0.0, (0, 0)
    for _ in range(repeats):
        started = time.perf_counter()
        mined = messages_cluster(messages, sample_size=sample_size, min_cluster_size=8)
        seconds.append(time.perf_counter() - started)
        # The topic's clusters: those mostly made of injected messages (identical repeats can split a topic in a few).
        topical = [cluster for cluster in mined.clusters if len(injected & set(cluster.members)) * 2 > cluster.size]
        recall = len(injected & {i for cluster in topical for i in cluster.members}) / len(injected)
        clusters = (len(mined.clusters), len(topical))
    return statistics.median(seconds), recall, clusters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--baseline-messages", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(16)

    small, small_injected = corpus(args.baseline_messages, rng)
    full_s, full_recall, full_clusters = timed(small, small_injected, sample_size=len(small), repeats=args.repeats)
    sampled_s, sampled_recall, sampled_clusters = timed(small, small_injected, sample_size=10_000,
                                                        repeats=args.repeats)
    print(f"{args.baseline_messages:,} messages: HDBSCAN on all (baseline) {full_s:.2f} s, {full_clusters[0]} clusters "
          f"({full_clusters[1]} of the topic, holding {full_recall:.0%} of its messages)")
    print(f"{args.baseline_messages:,} messages: sample of 10,000 + neighbours {sampled_s:.2f} s, {sampled_clusters[0]} "
          f"clusters ({sampled_clusters[1]} of the topic, holding {sampled_recall:.0%}); {full_s / sampled_s:.1f}x faster")
    big, big_injected = corpus(args.messages, rng)
    big_s, big_recall, big_clusters = timed(big, big_injected, sample_size=10_000, repeats=args.repeats)
    print(f"{args.messages:,} messages: sample of 10,000 + neighbours {big_s:.2f} s (median of {args.repeats}), "
          f"{big_clusters[0]} clusters ({big_clusters[1]} of the topic, holding {big_recall:.0%} of its "
          f"{len(big_injected):,} messages)")


if __name__ == "__main__":
    main()
