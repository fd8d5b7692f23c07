"""Redaction of personal data (e-mails, IBANs, card and phone numbers) from a message before it may be logged."""

import re

import phonenumbers
from django.conf import settings
from phonenumbers import Leniency, ValidationResult

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# Country code, 2 check digits, then the BBAN either compact or in the printed groups of up to 4. Lower case too:
# people type IBANs that way. The mod-97 check, not this pattern, decides what an IBAN is.
IBAN = re.compile(r"(?<![^\W_])[A-Za-z]{2}[0-9]{2}(?:[A-Za-z0-9]{11,30}|(?: [A-Za-z0-9]{1,4}){3,8})(?![^\W_])")
# A run of 13+ digits, single spaces or dashes between them. No \b: a card glued to a word (`card4111...`) is still
# a card. Not after a '+', which starts an international phone number.
DIGIT_RUN = re.compile(r"(?<![\d+])(?:\d[ -]?){12,}\d(?!\d)")
DIGIT_GROUP_SEPARATOR = re.compile(r"[ -]")
DIGITS_7 = re.compile(r"(?:\D*\d){7}")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _iban_ok(iban: str) -> bool:
    # ISO 13616: move the first 4 characters to the end, letters to 10..35; the number mod 97 must be 1.
    rearranged = iban[4:] + iban[:4]
    return 15 <= len(iban) <= 34 and int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _iban_sub(match: re.Match) -> str:
    # The grouped form may have run into the words after it (`BE68 5390 0754 7034 and more`): try the longest
    # prefix ending at a group boundary that checks out, and leave the rest as it was.
    groups = match.group().split(" ")
    for end in range(len(groups), 0, -1):
        if _iban_ok("".join(groups[:end]).upper()):
            return " ".join(["[iban]", *groups[end:]])
    return match.group()


def _card_sub(match: re.Match) -> str:
    # A run may hold more than a card (`4111 1111 1111 1111 12/25`, two cards in a row): each span of whole groups
    # with 13-19 digits that passes Luhn is a card. Where spans overlap, the longest wins, then the one in fewest
    # groups (cards come in 4 groups, not 5), then the leftmost.
    run = match.group()
    groups = DIGIT_GROUP_SEPARATOR.split(run)
    starts = [0, *(m.end() for m in DIGIT_GROUP_SEPARATOR.finditer(run))]
    spans = []
    for i in range(len(groups)):
        digits = ""
        for j in range(i, len(groups)):
            digits += groups[j]
            if len(digits) > 19:
                break
            if len(digits) >= 13 and _luhn_ok(digits):
                spans.append((-len(digits), j - i, i, j))
    taken = [False] * len(groups)
    cards = []
    for *_, i, j in sorted(spans):
        if not any(taken[i : j + 1]):
            taken[i : j + 1] = [True] * (j + 1 - i)
            cards.append((starts[i], starts[j] + len(groups[j])))
    if not cards:
        return run
    pieces, last = [], 0
    for start, end in sorted(cards):
        pieces += [run[last:start], "[card]"]
        last = end
    pieces.append(run[last:])
    return "".join(pieces)


def _phones_sub(message: str, *, region: str) -> str:
    # The matcher at Leniency.POSSIBLE yields the candidates, numbers glued to words included. One counts when it is
    # a valid number for its region, which turns away amounts (1000000), order numbers and dates; or, when written
    # with an explicit +country code, when its length is possible: the '+' is unambiguous, and this covers fictional
    # 555 numbers and ranges newer than the library's metadata.
    pieces, last = [], 0
    for match in phonenumbers.PhoneNumberMatcher(message, region, leniency=Leniency.POSSIBLE):
        number = match.number
        if phonenumbers.is_valid_number(number) or (
            match.raw_string.startswith("+")
            and phonenumbers.is_possible_number_with_reason(number) == ValidationResult.IS_POSSIBLE
        ):
            pieces += [message[last : match.start], "[phone]"]
            last = match.end
    if not pieces:
        return message
    pieces.append(message[last:])
    return "".join(pieces)


def message_redact(message: str) -> str:
    """The message with e-mails, IBANs, card and phone numbers replaced by `[email]`, `[iban]`, `[card]`, `[phone]`.

    Idempotent, and a message without any of them comes back as it was.
    """
    has_at = "@" in message
    # Every IBAN, card and phone number worth redacting has 7 digits or more: most messages stop here.
    if not has_at and not DIGITS_7.match(message):
        return message
    if has_at:
        message = EMAIL.sub("[email]", message)
    # Longest and most specific first, so a card's or an IBAN's digits are not half taken for a phone number.
    message = IBAN.sub(_iban_sub, message)
    message = DIGIT_RUN.sub(_card_sub, message)
    if not DIGITS_7.match(message):  # what is left may be too short to be a phone number
        return message
    return _phones_sub(message, region=getattr(settings, "INTENT_PHONE_REGION", "US"))
