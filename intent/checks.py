"""System checks (`manage.py check`, and every runserver/migrate start): settings a detector needs, told at start."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, register


@register()
def local_encoder_check(app_configs, **kwargs) -> list[Error]:
    from .program.local_encoder import encoder_setting_parse

    try:
        encoder_setting_parse(settings.INTENT_LOCAL_ENCODER)
    except ValueError as exc:
        return [Error(str(exc), hint="none keeps the n-gram model alone.", id="intent.E001")]
    return []
