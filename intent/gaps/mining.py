"""Clustering messages into candidate intents, with scikit-learn.

Features: TF-IDF of words and word pairs fitted on the messages mined (not the local model's vocabulary, which is
the catalog's: a missing topic's words are exactly what it lacks), reduced by truncated SVD and L2-normalised, so
that Euclidean distance ranks like cosine. HDBSCAN finds clusters of any number and shape and leaves noise out.
Past `sample_size` messages it clusters a uniform sample (its cost grows faster than linearly: bench/gaps.py) and
each other message joins the label of its 5 nearest sampled neighbours."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date

import numpy as np

NAME_WORD = re.compile(r"[a-z][a-z0-9]+")


@dataclass(frozen=True)
class Message:
    text: str
    day: date
    detected_intent: str


@dataclass
class Cluster:
    size: int
    top_terms: list[str]
    examples: list[str]
    trend: dict[date, int]
    detected_intents: list[tuple[str, int]]
    suggested_name: str = ""
    members: list[int] = field(default_factory=list, repr=False)


@dataclass
class Mined:
    clusters: list[Cluster]
    clustered: int  # messages the clusterer saw


def messages_cluster(messages: list[Message], *, sample_size: int = 10_000, dimensions: int = 20,
                     min_cluster_size: int = 8, seed: int = 0) -> Mined:
    """Clusters of similar messages, the largest first (noise left out)."""
    from sklearn.cluster import HDBSCAN
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import normalize

    if len(messages) < min_cluster_size:
        return Mined(clusters=[], clustered=len(messages))
    texts = [message.text for message in messages]
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, stop_words="english",
                                 max_features=50_000)
    try:
        tfidf = vectorizer.fit_transform(texts)
    except ValueError:  # no term in two messages: nothing recurs
        return Mined(clusters=[], clustered=len(messages))
    components = min(dimensions, tfidf.shape[1] - 1)
    if components < 2:
        return Mined(clusters=[], clustered=len(messages))
    points = normalize(TruncatedSVD(components, random_state=seed).fit_transform(tfidf))
    # A message with no recurring term has no features: noise, never a cluster of its own.
    featured = np.flatnonzero(np.diff(tfidf.indptr) > 0)
    if len(featured) < min_cluster_size:
        return Mined(clusters=[], clustered=len(featured))
    rng = np.random.default_rng(seed)
    sampled = np.sort(rng.choice(featured, sample_size, replace=False)) if len(featured) > sample_size else featured
    sample_labels = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=3).fit_predict(points[sampled])
    labels = np.full(len(texts), -1)
    labels[sampled] = sample_labels
    if len(sampled) < len(featured) and (sample_labels >= 0).any():
        rest = np.setdiff1d(featured, sampled)
        neighbours = KNeighborsClassifier(n_neighbors=5).fit(points[sampled], sample_labels)
        labels[rest] = neighbours.predict(points[rest])
    terms = np.asarray(vectorizer.get_feature_names_out())
    clusters = []
    for label in sorted(set(labels.tolist()) - {-1}):
        members = np.flatnonzero(labels == label)
        weights = np.asarray(tfidf[members].mean(axis=0)).ravel()
        top = [str(terms[i]) for i in np.argsort(-weights, kind="stable")[:8] if weights[i] > 0]
        centre = points[members].mean(axis=0)
        closest = members[np.argsort(-(points[members] @ centre), kind="stable")]
        examples: list[str] = []
        for index in closest:  # distinct texts, the most central first
            if texts[index] not in examples:
                examples.append(texts[index])
            if len(examples) == 5:
                break
        clusters.append(Cluster(
            size=len(members), top_terms=top, examples=examples,
            trend=dict(Counter(messages[i].day for i in members)),
            detected_intents=Counter(messages[i].detected_intent for i in members).most_common(5),
            members=members.tolist()))
    clusters.sort(key=lambda cluster: (-cluster.size, cluster.top_terms))
    taken: set[str] = set()
    for cluster in clusters:
        cluster.suggested_name = name_suggest(cluster.top_terms, taken=taken)
        taken.add(cluster.suggested_name)
    return Mined(clusters=clusters, clustered=len(sampled))


def name_suggest(top_terms: list[str], *, taken: set[str]) -> str:
    """A slug from the cluster's top single words (e.g. `pet_insurance_claim`), unique among `taken`."""
    words: list[str] = []
    for term in top_terms:
        for word in term.split():
            if NAME_WORD.fullmatch(word) and word not in words:
                words.append(word)
    base = "_".join(words[:3])[:90] or "gap"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    return name
