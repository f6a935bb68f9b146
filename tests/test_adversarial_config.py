"""Hostile dyonisus.yml files: each is a ConfigError naming the problem, quickly and briefly."""

from __future__ import annotations

import time

import pytest

from builders.config import parse_config
from core.errors import ConfigError
from tests.conftest import Service
from tests.payloads import sha_for


def _alias_bomb(depth: int) -> str:
    """A YAML list of a few hundred bytes that stands for 9**depth items through aliases."""
    levels = ["&l0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, depth)]
    return "[" + ", ".join(levels) + "]"


@pytest.mark.parametrize(
    "text",
    [
        f"timeout: {_alias_bomb(7)}",
        f"cpus: {_alias_bomb(7)}",
        f"build_args: {{A: {_alias_bomb(7)}}}",
        f"port: {'9' * 5000}",
        "root: " + "[" * 20_000 + "]" * 20_000,
        "target: " + "x" * 1_000_000 + "\nmemory: " + "y" * 1_000_000,
        "\n".join(f"key{i}: 1" for i in range(10_000)),
    ],
    ids=["bomb-int", "bomb-float", "bomb-map", "huge-int", "deep", "long-strings", "many-keys"],
)
def test_hostile_config_is_a_short_config_error(text: str) -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError) as raised:
        parse_config(text)
    assert time.monotonic() - started < 5
    assert len(str(raised.value)) < 1000


def test_config_the_parser_chokes_on_fails_the_build_as_the_code(service: Service) -> None:
    files: dict[str, str | bytes] = {"index.html": "x", "dyonisus.yml": f"timeout: {'9' * 5000}\n"}
    data = service.wait(service.push(sha_for("huge-int-config"), files))
    assert data["status"] == "FAILED"
    assert data["outcome"] == "failure", data["reason"]
    assert "dyonisus.yml" in data["reason"]
