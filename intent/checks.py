"""System checks (`manage.py check`, and every runserver/migrate start): settings a detector needs, told at start."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, register


@register()
def local_encoder_check(app_configs, **kwargs) -> list[Error]:
    from .program.local_encoder import ENCODERS

    name = str(settings.INTENT_LOCAL_ENCODER).strip().lower()
    if name in ("", "none") or name in ENCODERS:
        return []
    return [Error(f"INTENT_LOCAL_ENCODER={settings.INTENT_LOCAL_ENCODER!r} is not an encoder",
                  hint=f"Use one of {sorted(ENCODERS)}, or none for the n-gram model alone.", id="intent.E001")]
