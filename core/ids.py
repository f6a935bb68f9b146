"""Unguessable, host-name-safe identifiers (cuid-like)."""

from __future__ import annotations

import secrets
import string

ALPHABET = string.digits + string.ascii_lowercase
RANDOM_BITS = 128
# 128 bits in base 36 need at most 25 characters.
BODY_LENGTH = 25


def new_id() -> str:
    """Return 'c' + 25 base-36 characters: a valid DNS label with 128 random bits."""
    value = secrets.randbits(RANDOM_BITS)
    chars = []
    for _ in range(BODY_LENGTH):
        value, digit = divmod(value, 36)
        chars.append(ALPHABET[digit])
    return "c" + "".join(reversed(chars))


def looks_like_id(text: str) -> bool:
    """Whether text has the shape of an id made by new_id()."""
    return len(text) == BODY_LENGTH + 1 and text[0] == "c" and all(ch in ALPHABET for ch in text[1:])
