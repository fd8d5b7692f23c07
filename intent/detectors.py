"""The process-wide detector: built once per catalog version and backend, reused by every request.

Building means fitting the local model, which takes seconds, so fitted models are cached on disk
(keyed by catalog version and training config) and in memory. Each process checks at most every
`INTENT_CATALOG_REFRESH_S` seconds whether the catalog or the active prompt version changed in the
database (one small query each), so an activation reaches every process within that time.

The active prompt version (`PromptVersion.is_active`, set by `activate_prompt_version`) names a saved
program: a DSPy program state (JSON) for the LM backend, a refitted local model for the local one.
A saved program that does not fit the configured backend (or, for a local model, the current catalog)
is not loaded: the default program answers, and a warning says why.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from .program import Catalog, LMSettings
from .program.circuit import CircuitConfig
from .program.files import write_atomically
from .program.versioning import version_hash
from .selectors import catalog_fingerprint, catalog_get

if TYPE_CHECKING:  # imported where a detector is built: DSPy and scikit-learn take seconds to load
    from .program import IntentDetector, LMIntentDetector
    from .program.local_model import LocalIntentModel, LocalModelConfig

logger = logging.getLogger(__name__)

_lock = threading.Lock()


@dataclass
class _Current:
    key: tuple
    detector: IntentDetector
    checked_at: float


_current: _Current | None = None
_models: dict[str, LocalIntentModel] = {}


def detector_get(*, fresh: bool = False) -> IntentDetector:
    """The detector for the current catalog, backend and active prompt version (built when one changed). A
    read: registering the version it reports is the caller's step (`prompt_version_register`). `fresh`: check the
    database now, not after INTENT_CATALOG_REFRESH_S."""
    global _current
    current = _current
    now = time.monotonic()
    if current is not None and not fresh and now - current.checked_at < settings.INTENT_CATALOG_REFRESH_S:
        return current.detector
    key = (catalog_fingerprint(), *_backend_key(), _active_version())
    if current is not None and current.key == key:
        current.checked_at = now
        return current.detector
    from .program import IntentDetector

    with _lock:
        if _current is not None and _current.key == key:
            return _current.detector
        catalog = catalog_get()
        lm_settings = _lm_settings()
        local_model = local_model_get(catalog=catalog)
        program = None
        active = key[-1]
        if active is not None:
            program, local_model = _active_program(active, catalog=catalog, lm=lm_settings is not None,
                                                   local_model=local_model)
        detector = IntentDetector(catalog=catalog, local_model=local_model, lm_settings=lm_settings, program=program)
        logger.info(
            "Detector ready: model=%s catalog=%s (%s intents, %s) prompt_version=%s",
            detector.model_name, catalog.version, len(catalog.intents), catalog.source, detector.prompt_version,
        )
        _current = _Current(key=key, detector=detector, checked_at=time.monotonic())
        return detector


def detector_warm() -> bool:
    """Build the process's detector before it takes requests (a web worker's boot: `post_worker_init` in
    gunicorn.conf.py), so that no request pays for loading DSPy and fitting or loading the model (seconds; a
    fresh worker's first detection took 11 s). Returns whether it is ready. A failure (the database not there yet)
    is logged, not raised: the first request builds it then, or answers 503 while it cannot. One message goes through
    the local model too (offline, never the LM): that loads its sentence encoder (~0.5 s on a first call)."""
    from django.db import connections

    started = time.perf_counter()
    try:
        detector = detector_get(fresh=True)
        detector.local(message="warm up", catalog=detector.catalog)
        logger.info("Detector warmed up in %.1f s", time.perf_counter() - started)
        return True
    except Exception:
        logger.warning("Could not build the detector at start-up; the first detection will", exc_info=True)
        return False
    finally:
        connections.close_all()  # requests open their own (a threaded worker's main thread serves none)


def _active_version() -> tuple[str, str] | None:
    from .models import PromptVersion

    return PromptVersion.objects.filter(is_active=True).values_list("version", "program_path").first()


def _active_program(
    active: tuple[str, str], *, catalog: Catalog, lm: bool, local_model: LocalIntentModel
) -> tuple[LMIntentDetector | None, LocalIntentModel]:
    """The active version's saved program (LM backend) or refitted model (local backend), when it fits."""
    from .program import LMIntentDetector
    from .program.local_model import LocalIntentModel

    version, path = active
    try:
        if path.endswith(".json"):
            if not lm:
                logger.warning("Active prompt version %s is an LM program; the local backend is configured", version)
                return None, local_model
            program = LMIntentDetector()
            program.load(path)
            return program, local_model
        model = LocalIntentModel.load(path)
    except Exception:
        logger.exception("Could not load the active prompt version %s from %s; the default program answers",
                         version, path)
        return None, local_model
    if lm:
        logger.warning("Active prompt version %s is a local model; an LM backend is configured", version)
        return None, local_model
    from .models import PromptVersion

    fitted_on = PromptVersion.objects.filter(version=version).values_list("description", flat=True).first() or {}
    if fitted_on.get("catalog_version") != catalog.version:
        logger.warning("Active prompt version %s was fitted on another catalog; the default model answers", version)
        return None, local_model
    return None, model


def detector_reset() -> None:
    """Forget the cached detector (tests, and after settings change at run time)."""
    global _current
    with _lock:
        _current = None
        _versions.clear()


# Detectors of other prompt versions than the active one (live experiments' arms): (version, key) -> detector.
_versions: dict[tuple, IntentDetector] = {}


class VersionUnavailable(Exception):
    """A prompt version that cannot answer here: unknown, without a saved program, not for this backend or catalog."""


def detector_for_version(version: str) -> IntentDetector:
    """A detector answering as this prompt version: the process's own when it is that version, else the version's
    saved program (an LM program with the configured LM; a local model alone), built once per process and catalog.
    Raises `VersionUnavailable` (why) when it cannot be built here, or would answer as another version."""
    current = detector_get()
    if current.prompt_version == version:
        return current
    key = (version, current.catalog.version, *_backend_key())
    detector = _versions.get(key)
    if detector is not None:
        return detector
    from .models import PromptVersion
    from .program import IntentDetector, LMIntentDetector
    from .program.local_model import LocalIntentModel

    path = PromptVersion.objects.filter(version=version).values_list("program_path", flat=True).first()
    if path is None:
        raise VersionUnavailable(f"No prompt version {version!r}")
    if not path:
        raise VersionUnavailable(f"Prompt version {version} has no saved program, and is not the one answering now")
    try:
        if path.endswith(".json"):
            lm_settings = _lm_settings()
            if lm_settings is None:
                raise VersionUnavailable(f"Prompt version {version} is an LM program; no LM is configured (INTENT_LM)")
            program = LMIntentDetector()
            program.load(path)
            detector = IntentDetector(catalog=current.catalog, local_model=current.local.model,
                                      lm_settings=lm_settings, program=program)
        else:
            detector = IntentDetector(catalog=current.catalog, local_model=LocalIntentModel.load(path))
    except VersionUnavailable:
        raise
    except Exception as exc:
        raise VersionUnavailable(f"Prompt version {version}: could not load {path}: {exc}") from exc
    if detector.prompt_version != version:
        raise VersionUnavailable(f"Prompt version {version} answers as {detector.prompt_version} with this catalog and "
                                 "backend (fitted on another catalog, or saved for another model)")
    with _lock:
        _versions[key] = detector
    return detector


def local_model_get(*, catalog: Catalog, config: LocalModelConfig | None = None) -> LocalIntentModel:
    """The local model fitted on this catalog: from memory, from the disk cache, or fitted now."""
    from .program.local_encoder import encoder_cache_dir_use
    from .program.local_model import LocalIntentModel

    encoder_cache_dir_use(settings.INTENT_MODEL_CACHE_DIR)  # its encoder, fitted or loaded, beside the model
    config = config or local_config_get()
    cache_key = f"{catalog.version}-{version_hash(config.as_dict())}"
    model = _models.get(cache_key)
    if model is not None:
        return model
    path = Path(settings.INTENT_MODEL_CACHE_DIR) / f"local-{cache_key}.joblib"
    if path.exists():
        try:
            model = LocalIntentModel.load(path)
        except Exception:  # a corrupt or incompatible cache file is refitted, not fatal
            logger.warning("Could not load %s; refitting", path, exc_info=True)
    if model is None:
        started = time.perf_counter()
        texts, labels = catalog.training_data()
        model = LocalIntentModel.fit(texts, labels, config)
        logger.info("Fitted local model on %s utterances in %.1f s", len(texts), time.perf_counter() - started)
        write_atomically(path, model.save, suffix=".tmp")
    _models.clear()  # keep one catalog's model in memory per process
    _models[cache_key] = model
    return model


def local_config_get() -> LocalModelConfig:
    """The local model's config: the defaults tuned for the encoder INTENT_LOCAL_ENCODER names (`none`: no encoder)."""
    from django.core.exceptions import ImproperlyConfigured

    from .program.local_encoder import encoder_setting_parse
    from .program.local_model import LocalModelConfig

    try:
        return LocalModelConfig.for_encoder(encoder_setting_parse(settings.INTENT_LOCAL_ENCODER))
    except ValueError as exc:
        raise ImproperlyConfigured(str(exc)) from exc


def _backend_key() -> tuple:
    return (
        settings.INTENT_LM,
        settings.INTENT_LOCAL_ENCODER,
        settings.INTENT_LM_API_BASE,
        settings.INTENT_LM_API_KEY,
        settings.INTENT_LM_TIMEOUT_S,
        settings.INTENT_LM_ENGINE,
        _circuit_config(),
    )


def _lm_settings() -> LMSettings | None:
    if settings.INTENT_LM in ("", "local"):
        return None
    return LMSettings(
        model=settings.INTENT_LM,
        api_base=settings.INTENT_LM_API_BASE,
        api_key=settings.INTENT_LM_API_KEY,
        timeout_s=settings.INTENT_LM_TIMEOUT_S,
        max_tokens=settings.INTENT_LM_MAX_TOKENS,
        num_retries=settings.INTENT_LM_NUM_RETRIES,
        engine=settings.INTENT_LM_ENGINE,
        circuit=_circuit_config(),
    )


def _circuit_config() -> CircuitConfig:
    return CircuitConfig(
        failures_to_open=settings.INTENT_LM_BREAKER_FAILURES,
        failure_rate_to_open=settings.INTENT_LM_BREAKER_FAILURE_RATE,
        window=settings.INTENT_LM_BREAKER_WINDOW,
        min_calls=settings.INTENT_LM_BREAKER_MIN_CALLS,
        cooldown_s=settings.INTENT_LM_BREAKER_COOLDOWN_S,
    )
