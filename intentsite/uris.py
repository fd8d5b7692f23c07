"""Connection URIs made fit to show (health answers, logs, errors): no credentials, wherever a URI keeps them."""

from __future__ import annotations

from urllib.parse import parse_qsl

HIDDEN = "***"


def uri_display(uri: str) -> str:
    """The URI without its user name and password, and with the value of every query parameter hidden: drivers
    take credentials there too (`?password=`, `?sslpassword=`, `?token=`), and a parameter's name says enough.
    Rebuilt by hand, not with `urlunsplit`, which would turn `sqlite:///path` into `sqlite:/path`."""
    rest, hash_sign, fragment = uri.partition("#")
    rest, question_mark, query = rest.partition("?")
    scheme, separator, remainder = rest.partition("://")
    if separator:
        authority, slash, path = remainder.partition("/")
        if "@" in authority:
            authority = authority.rsplit("@", 1)[1]
        rest = f"{scheme}{separator}{authority}{slash}{path}"
    if query:
        query = "&".join(f"{name}={HIDDEN}" for name, _ in parse_qsl(query, keep_blank_values=True)) or HIDDEN
    return f"{rest}{question_mark}{query}{hash_sign}{fragment}"


def uri_secrets_scrub(text: str, uri: str) -> str:
    """`text` (a driver's error message, say) without the URI's password and query values wherever they appear:
    drivers quote the URL they tried, whole or in parts (urllib3 quotes only the path and query)."""
    from urllib.parse import unquote, urlsplit

    text = text.replace(uri, uri_display(uri))
    parts = urlsplit(uri)
    secrets = [value for _, value in parse_qsl(parts.query, keep_blank_values=False)]
    if parts.password:
        secrets += [parts.password, unquote(parts.password)]
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= 3:  # a one- or two-letter value is no secret, and would garble the message
            text = text.replace(secret, HIDDEN)
    return text
