"""The API's JSON renderer (orjson) writes what DRF's JSONRenderer writes, byte for byte, for every kind of value the
views send; pretty-printing goes to DRF's own; a NaN is null, not an error (a 500)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.utils.translation import gettext_lazy
from rest_framework.renderers import JSONRenderer

from intentsite.renderers import FastJSONRenderer

PAYLOAD = {
    "text": "café ✓ 東京", "separators": "a\u2028b\u2029c", "quote": 'say "hi"\n\t\\', "none": None, "yes": True,
    "int": 2**62, "negative": -7, "float": 0.1 + 0.2, "small": 1e-300, "large": 1.5e300, "zero": 0.0,
    "moment": datetime(2026, 12, 1, 12, 30, 5, 123456, tzinfo=UTC), "whole": datetime(2026, 12, 1, tzinfo=UTC),
    "naive": datetime(2026, 12, 1, 8, 0, 1, 500), "day": date(2026, 12, 1), "clock": time(7, 5, 3, 250),
    "span": timedelta(seconds=90), "decimal": Decimal("12.50"), "id": uuid.UUID(int=12345),
    "lazy": gettext_lazy("Name"),
    "nested": [{"a": [1, 2.5, None, "x"]}, [], {}], 3: "int key", "tuple": (1, "two"),
}


def test_it_writes_what_drf_writes_byte_for_byte():
    assert FastJSONRenderer().render(PAYLOAD) == JSONRenderer().render(PAYLOAD)
    assert FastJSONRenderer().render(None) == JSONRenderer().render(None) == b""
    assert FastJSONRenderer().render([]) == b"[]"


def test_pretty_printing_is_drfs_own():
    media_type = "application/json; indent=4"
    assert FastJSONRenderer().render(PAYLOAD, media_type) == JSONRenderer().render(PAYLOAD, media_type)
    assert b"\n    " in FastJSONRenderer().render(PAYLOAD, media_type)


def test_what_orjson_cannot_write_goes_to_drf_and_nan_is_null():
    huge = {"n": 2**80}
    assert FastJSONRenderer().render(huge) == JSONRenderer().render(huge) == b'{"n":1208925819614629174706176}'
    assert FastJSONRenderer().render({"rate": float("nan")}) == b'{"rate":null}'
