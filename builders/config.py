"""The repository's `dyonisus.yml`: parsed and checked into a frozen RepoConfig (pure)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import yaml

from core.errors import ConfigError

CONFIG_FILE_NAMES = ("dyonisus.yml", "dyonisus.yaml")
BUILDERS = ("static", "docker")
NETWORKS = ("none", "host")
OUTPUT_DIR_CANDIDATES = ("dist", "build", "out", "public")
MAX_TIMEOUT = 24 * 3600
MAX_SHOWN_KEYS = 10
KNOWN_KEYS = {
    "root",
    "builder",
    "install_command",
    "build_command",
    "output_dir",
    "timeout",
    "paths",
    "dockerfile",
    "build_args",
    "target",
    "port",
    "memory",
    "cpus",
    "network",
}


@dataclass(frozen=True)
class RepoConfig:
    root: str = "."
    builder: str | None = None
    install_command: tuple[str, ...] | None = None
    build_command: tuple[str, ...] | None = None
    output_dir: str | None = None
    timeout: int | None = None
    paths: tuple[str, ...] = ()
    dockerfile: str = "Dockerfile"
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    port: int | None = None
    memory: str | None = None
    cpus: float | None = None
    network: str = "none"


def parse_config(text: str | None) -> RepoConfig:
    """Parse the text of dyonisus.yml (None or empty: every default)."""
    if text is None or not text.strip():
        return RepoConfig()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"dyonisus.yml is not valid YAML: {error}") from None
    except ValueError as error:
        # An integer of more digits than Python converts (sys.get_int_max_str_digits()).
        raise ConfigError(f"dyonisus.yml holds a value that cannot be read: {error}") from None
    except RecursionError:
        raise ConfigError("dyonisus.yml is nested too deeply") from None
    if data is None:
        return RepoConfig()
    if not isinstance(data, dict):
        raise ConfigError("dyonisus.yml must be a mapping of keys such as build_command: …")
    unknown = sorted(set(map(str, data)) - KNOWN_KEYS)
    if unknown:
        shown = ", ".join(key if len(key) <= 40 else key[:39] + "…" for key in unknown[:MAX_SHOWN_KEYS])
        more = f" and {len(unknown) - MAX_SHOWN_KEYS} more" if len(unknown) > MAX_SHOWN_KEYS else ""
        raise ConfigError(f"dyonisus.yml has unknown keys: {shown}{more}")
    return RepoConfig(
        root=_relative_path(data, "root") or ".",
        builder=_choice(data, "builder", BUILDERS),
        install_command=_command(data, "install_command"),
        build_command=_command(data, "build_command"),
        output_dir=_relative_path(data, "output_dir"),
        timeout=_positive_int(data, "timeout", maximum=MAX_TIMEOUT),
        paths=_string_list(data, "paths"),
        dockerfile=_relative_path(data, "dockerfile") or "Dockerfile",
        build_args=_string_map(data, "build_args"),
        target=_string(data, "target"),
        port=_positive_int(data, "port", maximum=65535),
        memory=_memory(data),
        cpus=_cpus(data),
        network=_choice(data, "network", NETWORKS) or "none",
    )


def _shown(value: object, *, limit: int = 80) -> str:
    """A value as an error message shows it: a short scalar, or only the kind of a collection.

    YAML aliases let a few bytes stand for a structure of billions of items, so a collection
    is never turned into text.
    """
    if isinstance(value, str | bool | int | float) or value is None:
        text = repr(value)
        return text if len(text) <= limit else text[: limit - 1] + "…"
    return f"a {type(value).__name__}"


def _string(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(f"dyonisus.yml: {key} must be a string")
    return str(value)


def _choice(data: dict[str, Any], key: str, choices: tuple[str, ...]) -> str | None:
    value = _string(data, key)
    if value is not None and value not in choices:
        raise ConfigError(f"dyonisus.yml: {key} must be one of {', '.join(choices)}, got {_shown(value)}")
    return value


def _relative_path(data: dict[str, Any], key: str) -> str | None:
    value = _string(data, key)
    if value is None:
        return None
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or "\\" in value:
        raise ConfigError(f"dyonisus.yml: {key} must be a path inside the repository, got {_shown(value)}")
    return str(path)


def _command(data: dict[str, Any], key: str) -> tuple[str, ...] | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as error:
            raise ConfigError(f"dyonisus.yml: {key} cannot be split into arguments: {error}") from None
    elif isinstance(value, list) and all(isinstance(item, str | int | float) for item in value):
        argv = [str(item) for item in value]
    else:
        raise ConfigError(f"dyonisus.yml: {key} must be a string or a list of strings")
    if not argv:
        raise ConfigError(f"dyonisus.yml: {key} is empty")
    return tuple(argv)


def _positive_int(data: dict[str, Any], key: str, *, maximum: int) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ConfigError(f"dyonisus.yml: {key} must be a whole number from 1 to {maximum}, got {_shown(value)}")
    return value


def _string_list(data: dict[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ConfigError(f"dyonisus.yml: {key} must be a list of path patterns")
    return tuple(value)


def _string_map(data: dict[str, Any], key: str) -> dict[str, str]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"dyonisus.yml: {key} must be a mapping of NAME: value")
    if not all(isinstance(item, str | int | float) or item is None for item in value.values()):
        raise ConfigError(f"dyonisus.yml: {key} values must be strings")
    return {str(name): "" if item is None else str(item) for name, item in value.items()}


def _memory(data: dict[str, Any]) -> str | None:
    value = _string(data, "memory")
    if value is None:
        return None
    number, unit = value[:-1], value[-1:].lower()
    if value.isdigit() or (unit in "kmg" and number.isdigit()):
        return value.lower()
    raise ConfigError(f"dyonisus.yml: memory must look like 512m or 1g, got {_shown(value)}")


def _cpus(data: dict[str, Any]) -> float | None:
    value = data.get("cpus")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 64:
        raise ConfigError(f"dyonisus.yml: cpus must be a number above 0, got {_shown(value)}")
    return float(value)
