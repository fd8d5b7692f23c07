"""Redaction of messages before they are logged: what is personal data is replaced, everything else is left as it was."""

from __future__ import annotations

import re

import pytest

from intent.redaction import message_redact

# (message, region for numbers without a +country code, the exact redacted message)
POSITIVES = [
    ("mail me at jane.doe+chat@example.co.uk", "US", "mail me at [email]"),
    ("contact:bob@example.com.", "US", "contact:[email]."),
    ("card4111111111111111", "US", "card[card]"),
    ("visa:4111-1111-1111-1111", "US", "visa:[card]"),
    ("my card is 4111 1111 1111 1111 exp 12/25", "US", "my card is [card] exp 12/25"),
    ("4111 1111 1111 1111 12/25", "US", "[card] 12/25"),  # the expiry's digits run on; the card is still found
    ("amex 3782 822463 10005 please", "US", "amex [card] please"),
    ("cards 4111111111111111 and 5500-0000-0000-0004", "US", "cards [card] and [card]"),
    ("two cards 4111111111111111 5500000000000004", "US", "two cards [card] [card]"),
    ("iban GB82 WEST 1234 5698 7654 32", "US", "iban [iban]"),
    ("DE89370400440532013000", "US", "[iban]"),
    ("iban:de89 3704 0044 0532 0130 00 thanks", "US", "iban:[iban] thanks"),
    ("BE68 5390 0754 7034 and more", "US", "[iban] and more"),
    ("call +44 20 7946 0958 today", "US", "call [phone] today"),
    ("(415) 555-2671", "US", "[phone]"),
    ("ring 415.555.2671!", "US", "ring [phone]!"),
    ("+1-202-555-0143", "US", "[phone]"),
    ("ring me on 020 7946 0958", "GB", "ring me on [phone]"),
    ("tel:+14155552671", "US", "tel:[phone]"),
    ("phone4155552671", "US", "phone[phone]"),
    ("call +1 555 123 4567", "US", "call [phone]"),  # not a valid US number, but written as a phone number is
    ("mobile +44 7700 900123", "US", "mobile [phone]"),
    ("+33 6 12 34 56 78", "US", "[phone]"),
    ("call 415-555-2671 ext. 12 after 5", "US", "call [phone] after 5"),
    ("pay 1000000 dollars to 415-555-2671 on 2024-05-01", "US", "pay 1000000 dollars to [phone] on 2024-05-01"),
    (
        "I'm bob@example.com, card 4111 1111 1111 1111, phone (415) 555-2671, iban GB82WEST12345698765432",
        "US",
        "I'm [email], card [card], phone [phone], iban [iban]",
    ),
]

# (message, region): none of these holds personal data; each must come back exactly as it was.
NEGATIVES = [
    ("pay 1000000 dollars on 2024-05-01", "US"),
    ("meet at 10:30", "US"),
    ("in 2025", "US"),
    ("order 12345", "US"),
    ("order 1234567", "US"),
    ("account 12345678 is closed", "US"),
    ("version 3.17.2", "US"),
    ("v1.2.3.4567", "US"),
    ("move 100 dollars", "US"),
    ("transfer 2,500,000.00 EUR on 01/05/2024", "US"),
    ("from 2024-05-01 10:30:00 to 2024-05-02 11:30:00", "US"),
    ("between 1990 and 2025 we grew 1500%", "US"),
    ("pi is 3.14159265358979", "US"),
    ("ISBN 978-3-16-148410-0", "US"),
    ("4111111111111112", "US"),  # 16 digits failing Luhn
    ("card 4111 1111 1111 1112", "US"),
    ("GB82 WEST 1234 5698 7654 33", "US"),  # IBAN-shaped, wrong checksum
    ("DE89370400440532013001", "US"),
    ("tracking 1Z999AA10123456784", "US"),
    ("ping @team about it", "US"),
    ("what is my balance", "US"),
    ("", "US"),
]


@pytest.mark.parametrize(("message", "region", "expected"), POSITIVES)
def test_personal_data_is_replaced(message, region, expected, settings):
    settings.INTENT_PHONE_REGION = region
    assert message_redact(message) == expected


@pytest.mark.parametrize(("message", "region"), NEGATIVES)
def test_everything_else_is_left_as_it_was(message, region, settings):
    settings.INTENT_PHONE_REGION = region
    assert message_redact(message) == message


@pytest.mark.parametrize(("message", "region", "expected"), POSITIVES)
def test_redacting_twice_changes_nothing(message, region, expected, settings):
    settings.INTENT_PHONE_REGION = region
    assert message_redact(message_redact(message)) == message_redact(message)


def test_no_raw_personal_data_survives(settings):
    settings.INTENT_PHONE_REGION = "US"
    message = "write to alice.smith@mail.example.org, charge 5500 0000 0000 0004 or call +1 (212) 555-0143 tomorrow"
    redacted = message_redact(message)
    digits = re.sub(r"\D", "", redacted)
    assert "alice" not in redacted and "@" not in redacted
    assert "5500000000000004" not in digits and "0004" not in redacted
    assert "2125550143" not in digits and "555" not in redacted
    assert sorted(re.findall(r"\[\w+\]", redacted)) == ["[card]", "[email]", "[phone]"]


def test_the_default_region_comes_from_settings(settings):
    settings.INTENT_PHONE_REGION = "GB"
    assert message_redact("call 020 7946 0958") == "call [phone]"
    settings.INTENT_PHONE_REGION = "US"
    assert message_redact("call 020 7946 0958") == "call 020 7946 0958"
