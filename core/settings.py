"""Service settings, read once at start from the environment and then from `.env`."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from core.errors import ConfigError

DEFAULT_GITHUB_API_URL = "https://api.github.com"
DEFAULT_DATABASE_URL = "sqlite:///dyonisus.db"
DEFAULT_STORAGE_URL = "./var/storage"
DEFAULT_PUBLIC_URL = "http://localhost:3000"
DEFAULT_PREVIEW_DOMAIN = "localhost"
DEFAULT_PORT = 3000
DEFAULT_BUILD_TIMEOUT = 900
DEFAULT_WORKER_CONCURRENCY = 2
DEFAULT_PREVIEW_IDLE_TIMEOUT = 900
GITHUB_SETTINGS = ("GITHUB_APP_ID", "GITHUB_PRIVATE_KEY", "GITHUB_WEBHOOK_SECRET")


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a `.env` file: `KEY=value` lines, `#` comments, optional quotes and `export`."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        index += 1
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.removeprefix("export ").strip()
        value = value.strip()
        if value[:1] in "\"'" and value[:1] and not _closed(value):
            # A quoted value may run over several lines (a PEM key, for example).
            while index < len(lines) and not _closed(value):
                value += "\n" + lines[index]
                index += 1
        values[key] = _unquote(value)
    return values


def _closed(value: str) -> bool:
    return len(value) >= 2 and value[-1] == value[0]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace("\\n", "\n").replace('\\"', '"')
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    return value.split(" #", 1)[0].strip()


def _integer(name: str, raw: str, *, minimum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _url(name: str, raw: str, *, schemes: tuple[str, ...]) -> str:
    scheme = raw.partition("://")[0]
    if "://" not in raw or scheme not in schemes or not raw.partition("://")[2]:
        expected = " or ".join(f"{s}://…" for s in schemes)
        raise ConfigError(f"{name} must be a URL like {expected}, got {redact_url(raw)!r}")
    return raw


def _private_key(env: Mapping[str, str]) -> str | None:
    key = env.get("GITHUB_PRIVATE_KEY", "").strip()
    path = env.get("GITHUB_PRIVATE_KEY_PATH", "").strip()
    if not key and path:
        try:
            key = Path(path).expanduser().read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ConfigError(
                f"GITHUB_PRIVATE_KEY_PATH points to {path!r}, which cannot be read: {error.strerror}"
            ) from None
    if not key:
        return None
    key = key.replace("\\n", "\n")
    if "-----BEGIN" not in key or "PRIVATE KEY-----" not in key:
        raise ConfigError(
            "GITHUB_PRIVATE_KEY must be the App's private key in PEM form "
            "(-----BEGIN RSA PRIVATE KEY----- …), as GitHub downloads it"
        )
    _check_rsa_key(key)
    return key + "\n"


def _check_rsa_key(pem: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        loaded = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"GITHUB_PRIVATE_KEY is not a readable PEM private key: {error}") from None
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ConfigError("GITHUB_PRIVATE_KEY must be an RSA key (GitHub signs App JWTs with RS256)")


@dataclass(frozen=True)
class Settings:
    """Everything the service is configured with. Build it with `Settings.from_env()`."""

    github_app_id: str | None = None
    github_private_key: str | None = field(default=None, repr=False)
    github_webhook_secret: str | None = field(default=None, repr=False)
    github_api_url: str = DEFAULT_GITHUB_API_URL
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    storage_url: str = DEFAULT_STORAGE_URL
    s3_endpoint_url: str | None = None
    public_url: str = DEFAULT_PUBLIC_URL
    preview_domain: str = DEFAULT_PREVIEW_DOMAIN
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    build_timeout: int = DEFAULT_BUILD_TIMEOUT
    worker_concurrency: int = DEFAULT_WORKER_CONCURRENCY
    cache_dir: Path = Path("./var/cache")
    docker_host: str | None = None
    registry_url: str | None = None
    registry_username: str | None = None
    registry_password: str | None = field(default=None, repr=False)
    preview_idle_timeout: int = DEFAULT_PREVIEW_IDLE_TIMEOUT
    encryption_key: str | None = field(default=None, repr=False)
    build_user: str | None = None

    @property
    def github_configured(self) -> bool:
        return self.github_app_id is not None

    @property
    def github_web_url(self) -> str:
        """GitHub's web address for this API: github.com, or the Enterprise host."""
        if self.github_api_url == DEFAULT_GITHUB_API_URL:
            return "https://github.com"
        return self.github_api_url.removesuffix("/api/v3")

    @property
    def embedded_worker(self) -> bool:
        return self.redis_url is None

    def secret_values(self) -> list[str]:
        """The values that must never reach a build's environment or a log."""
        secrets = [self.github_private_key, self.github_webhook_secret, self.encryption_key, self.registry_password]
        return [value for value in secrets if value]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, dotenv: Path | None = Path(".env")) -> Settings:
        """Read settings from `env` (default: os.environ), falling back to `.env`.

        Raises ConfigError naming the setting and what it expects.
        """
        merged: dict[str, str] = read_dotenv(dotenv) if dotenv is not None else {}
        merged.update(os.environ if env is None else env)
        return cls._parse(merged)

    @classmethod
    def _parse(cls, env: Mapping[str, str]) -> Settings:
        get: Callable[[str], str] = lambda name: env.get(name, "").strip()  # noqa: E731
        values: dict[str, Any] = {}
        values.update(_github_settings(env))
        values["github_api_url"] = _url(
            "GITHUB_API_URL", get("GITHUB_API_URL") or DEFAULT_GITHUB_API_URL, schemes=("http", "https")
        ).rstrip("/")
        values["database_url"] = _database_url(get("DATABASE_URL") or DEFAULT_DATABASE_URL)
        if get("REDIS_URL"):
            values["redis_url"] = _url("REDIS_URL", get("REDIS_URL"), schemes=("redis", "rediss", "unix"))
        values["storage_url"] = _storage_url(get("STORAGE_URL") or DEFAULT_STORAGE_URL)
        values["s3_endpoint_url"] = get("S3_ENDPOINT_URL") or None
        values["preview_domain"] = _domain(get("PREVIEW_DOMAIN") or DEFAULT_PREVIEW_DOMAIN)
        values["host"] = get("HOST") or "127.0.0.1"
        values["port"] = _integer("PORT", get("PORT") or str(DEFAULT_PORT), minimum=1)
        if values["port"] > 65535:
            raise ConfigError(f"PORT must be at most 65535, got {values['port']}")
        # Unset, the public address is this machine on PORT.
        values["public_url"] = _url(
            "PUBLIC_URL", get("PUBLIC_URL") or f"http://localhost:{values['port']}", schemes=("http", "https")
        ).rstrip("/")
        values["build_timeout"] = _integer(
            "BUILD_TIMEOUT", get("BUILD_TIMEOUT") or str(DEFAULT_BUILD_TIMEOUT), minimum=1
        )
        values["worker_concurrency"] = _integer(
            "WORKER_CONCURRENCY",
            get("WORKER_CONCURRENCY") or str(DEFAULT_WORKER_CONCURRENCY),
            minimum=1,
        )
        values["preview_idle_timeout"] = _integer(
            "PREVIEW_IDLE_TIMEOUT",
            get("PREVIEW_IDLE_TIMEOUT") or str(DEFAULT_PREVIEW_IDLE_TIMEOUT),
            minimum=1,
        )
        values["cache_dir"] = Path(get("CACHE_DIR") or "./var/cache")
        values["docker_host"] = _docker_host(get("DOCKER_HOST"))
        values["registry_url"] = get("REGISTRY_URL").rstrip("/") or None
        values["registry_username"] = get("REGISTRY_USERNAME") or None
        values["registry_password"] = env.get("REGISTRY_PASSWORD") or None
        values["encryption_key"] = _fernet_key(get("ENCRYPTION_KEY"))
        values["build_user"] = get("BUILD_USER") or None
        return cls(**values)


def _github_settings(env: Mapping[str, str]) -> dict[str, Any]:
    app_id = env.get("GITHUB_APP_ID", "").strip()
    secret = env.get("GITHUB_WEBHOOK_SECRET", "")
    key = _private_key(env)
    present = {"GITHUB_APP_ID": bool(app_id), "GITHUB_PRIVATE_KEY": bool(key), "GITHUB_WEBHOOK_SECRET": bool(secret)}
    if not any(present.values()):
        # Not registered yet: the service starts and offers to register the App.
        return {}
    missing = [name for name, ok in present.items() if not ok]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} missing: GITHUB_APP_ID, GITHUB_PRIVATE_KEY (or "
            "GITHUB_PRIVATE_KEY_PATH) and GITHUB_WEBHOOK_SECRET go together; "
            "register the App from app.yml to get them"
        )
    if not app_id.isdigit() and not app_id.startswith("Iv"):
        raise ConfigError(f"GITHUB_APP_ID must be the App's numeric id or its client id, got {app_id!r}")
    return {"github_app_id": app_id, "github_private_key": key, "github_webhook_secret": secret}


POSTGRES_SCHEMES = ("postgres", "postgresql", "postgresql+pool", "postgres+pool")
# Options of a PostgreSQL DATABASE_URL's query that the connection pool reads (whole numbers);
# any other option goes to the driver as a connection parameter (sslmode=require, …).
POOL_OPTIONS = ("max_connections", "max_idle", "timeout", "stale_timeout")
# Options peewee itself would read from the query: the service decides those.
REFUSED_OPTIONS = (
    "thread_safe",
    "autorollback",
    "autocommit",
    "autoconnect",
    "field_types",
    "operations",
    "register_unicode",
    "encoding",
    "isolation_level",
)


def _database_url(raw: str) -> str:
    scheme, _, rest = raw.partition("://")
    if not rest or scheme not in ("sqlite", *POSTGRES_SCHEMES):
        raise ConfigError(
            f"DATABASE_URL must be a URL like sqlite:///dyonisus.db or postgresql://user@host/database, "
            f"got {redact_url(raw)!r}"
        )
    if scheme in POSTGRES_SCHEMES:
        return _postgres_url(raw)
    if not raw.startswith("sqlite:///"):
        raise ConfigError(
            f"DATABASE_URL for SQLite takes three slashes (sqlite:///relative.db) or four "
            f"(sqlite:////abs/path.db), got {raw!r}"
        )
    if ":memory:" in raw:
        raise ConfigError(
            "DATABASE_URL cannot be an in-memory SQLite database: its deployments would be lost at "
            "exit, and each thread would see a database of its own; name a file (sqlite:///dyonisus.db)"
        )
    return raw


def _docker_host(raw: str) -> str | None:
    if not raw:
        return None
    return _url("DOCKER_HOST", raw, schemes=("unix", "tcp", "http", "https", "ssh"))


def _fernet_key(raw: str) -> str | None:
    if not raw:
        return None
    from cryptography.fernet import Fernet

    try:
        Fernet(raw.encode())
    except ValueError:
        raise ConfigError(
            "ENCRYPTION_KEY must be a Fernet key (32 bytes, url-safe base64): make one with "
            "python3 -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
        ) from None
    return raw


def _storage_url(raw: str) -> str:
    if raw.startswith("s3://"):
        bucket = raw[len("s3://") :].partition("/")[0]
        if not bucket:
            raise ConfigError(f"STORAGE_URL must name a bucket, like s3://bucket/prefix, got {raw!r}")
        return raw
    if "://" in raw and not raw.startswith("file://"):
        raise ConfigError(f"STORAGE_URL must be a path, file:///abs/path or s3://bucket/prefix, got {raw!r}")
    return raw


def _domain(raw: str) -> str:
    domain = raw.strip(".").lower()
    labels = domain.split(".")
    if not all(label and len(label) <= 63 and label.replace("-", "").isalnum() for label in labels):
        raise ConfigError(f"PREVIEW_DOMAIN must be a host name such as localhost or preview.example.com, got {raw!r}")
    return domain


def _postgres_url(raw: str) -> str:
    parts = urlsplit(raw)
    try:
        parts.port  # noqa: B018 (reading it checks it)
    except ValueError as error:
        raise ConfigError(f"DATABASE_URL has a bad port ({error}), got {redact_url(raw)!r}") from None
    if not parts.path.strip("/"):
        raise ConfigError(f"DATABASE_URL names no database: add it after the host, got {redact_url(raw)!r}")
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in REFUSED_OPTIONS:
            raise ConfigError(
                f"DATABASE_URL option {name} is not one the service takes: the query may hold "
                f"{', '.join(POOL_OPTIONS)} and the driver's connection parameters (sslmode=…)"
            )
        if name in POOL_OPTIONS and not value.isdigit():
            raise ConfigError(f"DATABASE_URL option {name} must be a whole number, got {value!r}")
    return raw


def redact_url(url: str) -> str:
    """The URL with its password, if any, replaced by ***: for messages and logs.

    Read more loosely than a URL parser would, so that a password holding an unencoded `/`, `?`,
    `#` or `@` is hidden too: everything before the last `@` is the user part, and a password
    given as a query option (`?password=…`) is hidden as well."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    userinfo, at, after = rest.rpartition("@")
    if at and ":" in userinfo:
        rest = f"{userinfo.partition(':')[0]}:***@{after}"
    return scheme + "://" + _SECRET_OPTION.sub(r"\1=***", rest)


_SECRET_OPTION = re.compile(r"(?i)((?:^|[?&;])(?:ssl)?password)=[^&#]*")


def database_problem(settings: Settings, error: Exception) -> str:
    """The start-up message for a database that cannot be opened."""
    reason = str(error).strip().replace(settings.database_url, redact_url(settings.database_url))
    return f"dyonisus: cannot open the database at DATABASE_URL={redact_url(settings.database_url)}: {reason}"


def describe(settings: Settings) -> str:
    """A one-line summary for the start-up log (no secrets)."""
    parts = [
        f"database={redact_url(settings.database_url)}",
        f"storage={settings.storage_url}",
        f"queue={'redis' if settings.redis_url else 'in-process'}",
        f"github={settings.github_api_url}",
    ]
    return " ".join(shlex.quote(part) for part in parts)
