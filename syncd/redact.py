"""Keep secrets out of everything syncd prints."""

from __future__ import annotations

import re

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@\s]*)@")
_KEYWORD_PASSWORD = re.compile(
    r"(?P<head>\bpassword\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|\S+)", re.I
)

MASK = "***"


def redact(text: str) -> str:
    """Mask passwords in URL-style and keyword-style DSNs found anywhere in ``text``."""
    text = _URL_PASSWORD.sub(lambda m: m["head"] + MASK + "@", text)
    return _KEYWORD_PASSWORD.sub(lambda m: m["head"] + MASK, text)


def scrub(text: str, secrets: list[str]) -> str:
    """Redact DSNs and also every literal secret we know of."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return redact(text)
