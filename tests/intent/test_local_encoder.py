"""The local model's sentence encoder: made from its package (checked, deterministic, cached), close to the fp32
model it quantises, one computation per text whatever the batch, and chosen by INTENT_LOCAL_ENCODER."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace

import numpy as np
import pytest
from django.conf import settings as django_settings

from intent.program import local_encoder
from intent.program.local_encoder import (
    DEFAULT_ENCODER,
    ENCODERS,
    EncoderUnavailable,
    SentenceEncoder,
    encoder_load,
    encoder_model_path,
)

NAME = DEFAULT_ENCODER


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_running_model_is_made_from_the_package_once_and_the_same_each_time(tmp_path):
    first = encoder_model_path(name=NAME, cache_dir=tmp_path / "a")
    again = encoder_model_path(name=NAME, cache_dir=tmp_path / "b")
    assert first.name == again.name and _sha(first) == _sha(again)  # reproducible: the same bytes
    made_at = first.stat().st_mtime_ns
    assert encoder_model_path(name=NAME, cache_dir=tmp_path / "a") == first
    assert first.stat().st_mtime_ns == made_at  # cached: not made again
    assert [p.name for p in (tmp_path / "a").iterdir()] == [first.name]  # no temporary files left behind


def test_a_model_or_tokenizer_file_that_is_not_the_pinned_one_is_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(ENCODERS, "tampered", replace(ENCODERS[NAME], sha256="0" * 64))
    with pytest.raises(EncoderUnavailable, match="sha256"):
        encoder_model_path(name="tampered", cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())
    monkeypatch.setitem(ENCODERS, "missing", replace(ENCODERS[NAME], model_package="no_such_package_here"))
    with pytest.raises(EncoderUnavailable, match="not installed"):
        encoder_model_path(name="missing", cache_dir=tmp_path)
    model = encoder_model_path(name=NAME, cache_dir=tmp_path / "cache")
    with pytest.raises(EncoderUnavailable, match="tokenizer.json: sha256"):
        SentenceEncoder(replace(ENCODERS[NAME], tokenizer_sha256="0" * 64), model)


def test_int8_embeddings_stay_close_to_the_fp32_model(tmp_path, clinc150):
    """Per-channel quantisation keeps the embeddings (the per-tensor default gave cosine 0.961 on average)."""
    fp32 = tmp_path / "fp32.onnx"
    local_encoder._dequantised_save(local_encoder._package_file(ENCODERS[NAME].model_package,
                                                                ENCODERS[NAME].model_file), fp32)
    reference = SentenceEncoder(ENCODERS[NAME], fp32)
    texts = [text for text, _ in clinc150["test"][::45]] + [text for text, _ in clinc150["oos_test"][::50]]
    cosines = np.sum(encoder_load(NAME).embed(texts) * reference.embed(texts), axis=1)
    assert cosines.mean() >= 0.985, cosines.mean()
    assert cosines.min() >= 0.9, cosines.min()


def test_embeddings_are_unit_vectors_that_put_paraphrases_together():
    encoder = encoder_load(NAME)
    balance, paraphrase, unrelated = encoder.embed(
        ["how much money is in my checking account", "what's my current balance", "play some jazz music"])
    for vector in (balance, paraphrase, unrelated):
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
    assert float(balance @ paraphrase) > float(balance @ unrelated) + 0.2


def test_a_text_gets_the_same_embedding_alone_or_among_others():
    encoder = encoder_load(NAME)
    texts = ["book a flight to paris", "what's the weather", "transfer $20 to savings", "hi", "x" * 20]
    together = encoder.embed(texts, workers=2)
    alone = np.stack([encoder.embed([text])[0] for text in texts])
    assert np.array_equal(together, alone)
    assert encoder.embed([]).shape == (0, ENCODERS[NAME].dimension)


def test_a_long_message_is_truncated_not_refused():
    encoder = encoder_load(NAME)
    long, first_words = encoder.embed(["please " * 2000, "please " * 200])
    assert np.allclose(long, first_words, atol=1e-6)  # both cut at local_encoder.MAX_TOKENS tokens


def test_the_encoder_writes_nothing_under_home(tmp_path, monkeypatch):
    """onnxruntime's telemetry stays off: a process that makes and runs an encoder leaves HOME as it was."""
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    code = ("from intent.program.local_encoder import encoder_load; "
            f"print(encoder_load({NAME!r}, cache_dir={str(tmp_path / 'cache')!r}).embed(['hello']).shape)")
    env = {**os.environ, "HOME": str(home)}
    env.pop("ORT_DISABLE_TELEMETRY", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         check=True, cwd=django_settings.BASE_DIR)
    assert "(1, 384)" in out.stdout
    assert list(home.rglob("*")) == []


def test_the_service_keeps_its_encoder_where_its_setting_says(small_catalog, settings, tmp_path, monkeypatch):
    """INTENT_MODEL_CACHE_DIR set in Django's settings (not in the environment) holds the encoder's model file beside
    the fitted local model: the folder a deployment points at is the only one written."""
    from intent import detectors

    monkeypatch.delenv("INTENT_MODEL_CACHE_DIR", raising=False)
    settings.INTENT_MODEL_CACHE_DIR = tmp_path / "models"
    settings.INTENT_LOCAL_ENCODER = NAME  # the distributed pass runs the n-gram model alone
    detectors.detector_reset()
    monkeypatch.setattr(detectors, "_models", {})  # no model (and encoder) of an earlier test in memory
    try:
        detector = detectors.detector_get(fresh=True)
        answer = detector.local(message="how much money is in my checking account", catalog=detector.catalog)
        made = sorted(path.name for path in (tmp_path / "models").iterdir())
    finally:
        local_encoder.encoder_cache_dir_use(None)
        local_encoder._encoder.cache_clear()  # this test's encoder (~50 MB) is not kept for the process
        detectors.detector_reset()
    assert answer.intent == "balance"
    assert [name for name in made if name.startswith(f"encoder-{NAME}-")] != []
    assert [name for name in made if name.startswith("local-")] != []
