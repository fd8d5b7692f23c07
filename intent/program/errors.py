"""Failure categories of a detection, shared by the response, the tracking and the analytics."""

from __future__ import annotations

import concurrent.futures
import socket

from .circuit import CircuitOpen

LM_TIMEOUT = "lm_timeout"
LM_AUTH = "lm_auth"
LM_RATE_LIMIT = "lm_rate_limit"
LM_UNAVAILABLE = "lm_unavailable"
PARSE_ERROR = "parse_error"
INVALID_OUTPUT = "invalid_output"
INTERNAL = "internal"
LM_CIRCUIT_OPEN = "lm_circuit_open"  # the LM was not called: its circuit breaker is open

ERROR_CATEGORIES = (LM_TIMEOUT, LM_AUTH, LM_RATE_LIMIT, LM_UNAVAILABLE, PARSE_ERROR, INVALID_OUTPUT, INTERNAL,
                    LM_CIRCUIT_OPEN)
# The failures that open the circuit breaker: the LM could not be reached, or refused to answer. Parse errors
# and invalid output do not: the LM answered (quickly), so skipping it would save no time, and would hide a
# prompt or model problem behind the local backend. Nor do internal errors: a bug here, not the LM's health.
CIRCUIT_FAILURES = frozenset({LM_TIMEOUT, LM_AUTH, LM_RATE_LIMIT, LM_UNAVAILABLE})


class InvalidOutputError(ValueError):
    """The LM answered, but not with something the catalog allows."""


def _chain(exc: BaseException):
    seen = 0
    while exc is not None and seen < 10:
        yield exc
        exc = exc.__cause__ or exc.__context__
        seen += 1


def error_category(exc: BaseException) -> str:
    """Map an exception raised while detecting to one of ERROR_CATEGORIES."""
    from dspy.utils.exceptions import (
        AdapterParseError,
        LMAuthError,
        LMBillingError,
        LMNotConfiguredError,
        LMRateLimitError,
        LMServerError,
        LMTimeoutError,
        LMTransportError,
    )  # here: the categories alone need no DSPy

    if isinstance(exc, CircuitOpen):
        return LM_CIRCUIT_OPEN
    # A timeout first: DSPy reports a read timeout as a transport error caused by a socket timeout.
    for link in _chain(exc):
        if isinstance(link, (LMTimeoutError, TimeoutError, socket.timeout, concurrent.futures.TimeoutError)):
            return LM_TIMEOUT
        if "timeout" in type(link).__name__.lower():
            return LM_TIMEOUT
    if isinstance(exc, (LMAuthError, LMBillingError, LMNotConfiguredError)):  # no or bad credentials
        return LM_AUTH
    if isinstance(exc, LMRateLimitError):
        return LM_RATE_LIMIT
    if isinstance(exc, (LMServerError, LMTransportError, ConnectionError)):
        return LM_UNAVAILABLE
    if isinstance(exc, AdapterParseError):
        return PARSE_ERROR
    if isinstance(exc, InvalidOutputError):
        return INVALID_OUTPUT
    name = type(exc).__name__.lower()
    # litellm and httpx errors when the litellm engine is forced.
    if "authentication" in name or "permissiondenied" in name:
        return LM_AUTH
    if "ratelimit" in name:
        return LM_RATE_LIMIT
    if "connect" in name or "serviceunavailable" in name or "internalserver" in name:
        return LM_UNAVAILABLE
    return INTERNAL
