"""Stable preview host names (pure): `pr-<n>--<owner>-<repo>`, `<branch>--<owner>-<repo>`, `<owner>-<repo>`."""

from __future__ import annotations

import hashlib
import re

MAX_LABEL = 63
HASH_LENGTH = 6
_INVALID = re.compile(r"[^a-z0-9]+")
_VALID_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_LENGTH]


def _fit(label: str, original: str) -> str:
    """Shorten a label to MAX_LABEL, keeping it unique with a hash of what it stands for."""
    if len(label) <= MAX_LABEL:
        return label
    head = label[: MAX_LABEL - HASH_LENGTH - 1].rstrip("-")
    return f"{head}-{_digest(original)}"


def slug(text: str) -> str:
    """A DNS label for any text: stable, and distinct for distinct texts.

    Text that is already a lower-case label stays as it is; anything that had to change
    (capitals, slashes, dots, non-ASCII) gets a short hash of the original, so that
    `Feature/A` and `feature-a` never share a label.
    """
    if _VALID_LABEL.match(text) and "--" not in text:
        return _fit(text, text)
    base = _INVALID.sub("-", text.lower()).strip("-")
    base = re.sub(r"-{2,}", "-", base) or "x"
    return _fit(f"{base}-{_digest(text)}", text)


def project_label(owner: str, repo: str) -> str:
    # GitHub owner and repository names are case-insensitive; branch names are not.
    owner, repo = owner.lower(), repo.lower()
    return _fit(f"{slug(owner)}-{slug(repo)}", f"{owner}/{repo}")


def production_alias(owner: str, repo: str) -> str:
    return project_label(owner, repo)


def branch_alias(owner: str, repo: str, branch: str) -> str:
    full = f"{slug(branch)}--{project_label(owner, repo)}"
    return _fit(full, f"{owner}/{repo}@{branch}")


def pr_alias(owner: str, repo: str, number: int) -> str:
    return _fit(f"pr-{number}--{project_label(owner, repo)}", f"{owner}/{repo}#{number}")
