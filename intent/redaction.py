"""Redaction of personal data from a message before it may be logged (`INTENT_LOG_MESSAGES=1`)."""

import re

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# 13-19 digits, optionally grouped by spaces or dashes: card-like, whatever the Luhn checksum says.
CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
# Phone numbers: an optional +country code, then 7+ digits with common separators.
PHONE = re.compile(r"(?<!\w)(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]?\d{2,4}){2,4}(?!\w)")


def message_redact(message: str) -> str:
    message = EMAIL.sub("[email]", message)
    message = CARD.sub("[card]", message)
    return PHONE.sub(lambda m: "[phone]" if sum(c.isdigit() for c in m.group()) >= 7 else m.group(), message)
