"""A circuit breaker per LM: after repeated failures, callers skip the LM for a cool-down instead of each
waiting for its timeout; then one probe call decides whether it closes again."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitOpen(Exception):
    """The LM was not called: its circuit is open."""


@dataclass(frozen=True)
class CircuitConfig:
    failures_to_open: int = 5  # consecutive failures that open it; 0 disables the breaker
    failure_rate_to_open: float = 0.5  # or a failure rate above this over the last `window` calls...
    window: int = 20
    min_calls: int = 10  # ...once the window holds at least this many calls
    cooldown_s: float = 30.0

    @property
    def enabled(self) -> bool:
        return self.failures_to_open > 0


class CircuitBreaker:
    """Thread-safe. `allow()` before each call: None means "do not call"; otherwise pass what it returned
    to `record()` with the call's outcome. Outcomes of calls let through before the last change of state
    (a call that was slow while the circuit opened) are counted in the window but change no state."""

    # A probe that has not reported after this long (nor a cool-down) is taken as lost (its thread died):
    # another may go. Longer than any LM timeout, so that a slow probe is never joined by a second one.
    probe_lost_s = 300.0

    def __init__(self, name: str, config: CircuitConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.name, self.config, self._clock = name, config, clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._generation = 0  # bumped on every change of state
        self._consecutive = 0
        self._outcomes: deque[bool] = deque(maxlen=max(1, config.window))  # True: a failure
        self._opened_at: float | None = None
        self._probe_started: float | None = None
        self.probes = 0
        self.times_opened = 0

    def allow(self) -> int | None:
        with self._lock:
            now = self._clock()
            if self._state == OPEN and now - self._opened_at >= self.config.cooldown_s:
                self._move(HALF_OPEN)
            if self._state == HALF_OPEN:
                lost_after = max(self.config.cooldown_s, self.probe_lost_s)
                if self._probe_started is not None and now - self._probe_started < lost_after:
                    return None  # one probe at a time
                self._generation += 1
                self._probe_started, self.probes = now, self.probes + 1
            return self._generation if self._state != OPEN else None

    def record(self, permit: int, *, failed: bool) -> None:
        with self._lock:
            self._outcomes.append(failed)
            self._consecutive = self._consecutive + 1 if failed else 0
            if permit != self._generation:
                return
            config = self.config
            if self._state == HALF_OPEN:
                self._move(OPEN if failed else CLOSED)
            elif self._state == CLOSED and (self._consecutive >= config.failures_to_open or (
                    len(self._outcomes) >= config.min_calls and self._rate() > config.failure_rate_to_open)):
                self._move(OPEN)

    def _rate(self) -> float:
        return sum(self._outcomes) / len(self._outcomes) if self._outcomes else 0.0

    def _move(self, state: str) -> None:
        if state == OPEN:
            self._opened_at, self.times_opened = self._clock(), self.times_opened + 1
            logger.warning("LM circuit %s opens for %g s (%s consecutive failures, failure rate %.2f)",
                           self.name, self.config.cooldown_s, self._consecutive, self._rate())
        elif state == CLOSED:
            self._opened_at = None
            self._outcomes.clear()
            logger.warning("LM circuit %s closes: the probe succeeded", self.name)
        self._state, self._probe_started = state, None
        self._generation += 1

    def configure(self, config: CircuitConfig) -> None:
        with self._lock:
            self.config = config
            self._outcomes = deque(self._outcomes, maxlen=max(1, config.window))

    def snapshot(self) -> dict[str, Any]:
        """The state as plain data; times in seconds relative to now (the clock is monotonic)."""
        with self._lock:
            now = self._clock()
            opened_ago = None if self._opened_at is None else now - self._opened_at
            return {
                "state": self._state,
                "consecutive_failures": self._consecutive,
                "failure_rate": round(self._rate(), 4),
                "calls_in_window": len(self._outcomes),
                "opened_s_ago": opened_ago,
                "open_for_s": None if opened_ago is None else max(0.0, self.config.cooldown_s - opened_ago),
                "probes": self.probes,
                "times_opened": self.times_opened,
            }


_registry: dict[tuple[str, str | None], CircuitBreaker] = {}
_registry_lock = threading.Lock()


def circuit_get(*, model: str, api_base: str | None, config: CircuitConfig) -> CircuitBreaker:
    """This process's breaker for an LM: every detector built for it shares it, so a rebuilt detector (a new
    catalog) keeps the state. A changed config applies from now on, keeping the state."""
    with _registry_lock:
        breaker = _registry.get((model, api_base))
        if breaker is None:
            host = urlsplit(api_base).netloc.rsplit("@", 1)[-1] if api_base else ""  # no credentials in logs
            breaker = _registry[(model, api_base)] = CircuitBreaker(f"{model}@{host}" if host else model, config)
        elif breaker.config != config:
            breaker.configure(config)
        return breaker


def circuits_state() -> list[dict[str, Any]]:
    with _registry_lock:
        items = sorted(_registry.items(), key=lambda item: (item[0][0], item[0][1] or ""))
    return [{"lm": model, "api_base": api_base, **breaker.snapshot()} for (model, api_base), breaker in items]


def circuits_reset() -> None:
    """Forget every breaker (tests)."""
    with _registry_lock:
        _registry.clear()
