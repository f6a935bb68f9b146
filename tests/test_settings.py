"""Settings: defaults, `.env`, and a clear message for every missing or malformed value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import Settings
from tests.services import ROOT


def test_embedded_defaults() -> None:
    settings = Settings.from_env({}, dotenv=None)
    assert settings.database_url == "sqlite:///dyonisus.db"
    assert settings.storage_url == "./var/storage"
    assert settings.redis_url is None and settings.embedded_worker
    assert settings.github_api_url == "https://api.github.com"
    assert settings.public_url == "http://localhost:3000"
    assert settings.preview_domain == "localhost"
    assert (settings.port, settings.build_timeout, settings.worker_concurrency) == (3000, 900, 2)
    assert not settings.github_configured


def test_environment_wins_over_dotenv(tmp_path: Path, rsa_key: tuple[str, str]) -> None:
    dotenv = tmp_path / ".env"
    key = rsa_key[0].replace("\n", "\\n")
    dotenv.write_text(
        f'GITHUB_APP_ID=42\nGITHUB_PRIVATE_KEY="{key}"\nGITHUB_WEBHOOK_SECRET=s3cret # comment\n'
        "PORT=4000\nPUBLIC_URL=http://deploy.example.com/\nexport BUILD_TIMEOUT=60\n"
    )
    settings = Settings.from_env({"PORT": "5000"}, dotenv=dotenv)
    assert settings.port == 5000
    assert settings.github_app_id == "42" and settings.github_webhook_secret == "s3cret"
    assert settings.public_url == "http://deploy.example.com"
    assert settings.build_timeout == 60
    assert "BEGIN RSA PRIVATE KEY" in (settings.github_private_key or "")


def test_private_key_from_a_path(tmp_path: Path, rsa_key: tuple[str, str]) -> None:
    path = tmp_path / "app.pem"
    path.write_text(rsa_key[0])
    env = {"GITHUB_APP_ID": "7", "GITHUB_PRIVATE_KEY_PATH": str(path), "GITHUB_WEBHOOK_SECRET": "x"}
    assert Settings.from_env(env, dotenv=None).github_private_key == rsa_key[0].strip() + "\n"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "eighty"}, "PORT must be a whole number"),
        ({"PORT": "70000"}, "PORT must be at most 65535"),
        ({"BUILD_TIMEOUT": "0"}, "BUILD_TIMEOUT must be at least 1"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL must be a URL like sqlite://"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL must be a URL like redis://"),
        ({"STORAGE_URL": "s3://"}, "STORAGE_URL must name a bucket"),
        ({"STORAGE_URL": "ftp://host/x"}, "STORAGE_URL must be a path"),
        ({"PUBLIC_URL": "localhost:3000"}, "PUBLIC_URL must be a URL"),
        ({"PREVIEW_DOMAIN": "bad domain!"}, "PREVIEW_DOMAIN must be a host name"),
        ({"DATABASE_URL": "sqlite://relative.db"}, "DATABASE_URL for SQLite takes three slashes"),
        ({"DATABASE_URL": "sqlite:///:memory:"}, "DATABASE_URL cannot be an in-memory SQLite database"),
        ({"DATABASE_URL": "postgresql://postgres@127.0.0.1:5432"}, "DATABASE_URL names no database"),
        ({"DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/"}, "DATABASE_URL names no database"),
        (
            {"DATABASE_URL": "postgresql://postgres@127.0.0.1/db?max_connections=abc"},
            "DATABASE_URL option max_connections must be a whole number, got 'abc'",
        ),
        (
            {"DATABASE_URL": "postgresql://postgres@127.0.0.1/db?max_idle=-1"},
            "DATABASE_URL option max_idle must be a whole number",
        ),
        ({"DATABASE_URL": "postgresql://postgres@127.0.0.1:99999/db"}, "DATABASE_URL has a bad port"),
        (
            {"DATABASE_URL": "postgresql://postgres@127.0.0.1/db?isolation_level=bogus"},
            "DATABASE_URL option isolation_level is not one the service takes",
        ),
        (
            {"DATABASE_URL": "postgresql://postgres@127.0.0.1/db?thread_safe=false"},
            "DATABASE_URL option thread_safe is not one the service takes",
        ),
        ({"DOCKER_HOST": "foo"}, "DOCKER_HOST must be a URL like unix://"),
        ({"ENCRYPTION_KEY": "abc"}, "ENCRYPTION_KEY must be a Fernet key"),
        ({"GITHUB_APP_ID": "12"}, "GITHUB_PRIVATE_KEY, GITHUB_WEBHOOK_SECRET missing"),
        (
            {"GITHUB_APP_ID": "12", "GITHUB_PRIVATE_KEY": "not a key", "GITHUB_WEBHOOK_SECRET": "x"},
            "GITHUB_PRIVATE_KEY must be the App's private key in PEM form",
        ),
        (
            {"GITHUB_APP_ID": "12", "GITHUB_PRIVATE_KEY_PATH": "/nonexistent.pem", "GITHUB_WEBHOOK_SECRET": "x"},
            "GITHUB_PRIVATE_KEY_PATH points to '/nonexistent.pem', which cannot be read",
        ),
    ],
)
def test_bad_settings_say_which_and_what(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        Settings.from_env(env, dotenv=None)


def test_bad_setting_at_start_is_a_readable_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "app.py")],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PORT": "eighty"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "configuration error: PORT must be a whole number, got 'eighty'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("database_url", "message"),
    [
        ("sqlite:///:memory:", "dyonisus: configuration error: DATABASE_URL cannot be an in-memory SQLite database"),
        ("sqlite:////nonexistent/folder/x.db", "dyonisus: cannot open the database at DATABASE_URL="),
        ("postgresql://postgres:s3cret@127.0.0.1:1/none", "dyonisus: cannot open the database at DATABASE_URL="),
    ],
)
def test_gunicorn_stops_at_a_bad_setting_with_a_readable_message(database_url: str, message: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url}
    env.pop("PORT", None)
    finished = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "--bind", "127.0.0.1:0", "app:create_app()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 2, finished.stderr
    assert message in finished.stderr
    assert "Traceback" not in finished.stderr
    assert "s3cret" not in finished.stderr


def test_github_web_address_follows_the_api() -> None:
    assert Settings.from_env({}, dotenv=None).github_web_url == "https://github.com"
    enterprise = Settings.from_env({"GITHUB_API_URL": "https://ghe.example.com/api/v3/"}, dotenv=None)
    assert enterprise.github_api_url == "https://ghe.example.com/api/v3"
    assert enterprise.github_web_url == "https://ghe.example.com"


def test_public_url_follows_port_when_unset() -> None:
    assert Settings.from_env({"PORT": "3012"}, dotenv=None).public_url == "http://localhost:3012"
    explicit = Settings.from_env({"PORT": "3012", "PUBLIC_URL": "https://deploy.example.com"}, dotenv=None)
    assert explicit.public_url == "https://deploy.example.com"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DATABASE_URL": "sqlite:////nonexistent/folder/x.db"}, "cannot open the database at DATABASE_URL="),
        ({"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}, "cannot open the database at DATABASE_URL="),
        (
            {"DATABASE_URL": "postgresql://postgres:s3cret@127.0.0.1:1/none"},
            "cannot open the database at DATABASE_URL=postgresql://postgres:***@127.0.0.1:1/none",
        ),
        (
            {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none?no_such_option=1"},
            "cannot open the database at DATABASE_URL=",
        ),
        ({"HOST": "not-a-host.invalid", "PORT": "3999"}, "cannot listen on HOST=not-a-host.invalid PORT=3999"),
    ],
)
def test_unusable_resources_at_start_are_readable_messages(tmp_path: Path, env: dict[str, str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "app.py")],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "CACHE_DIR": str(tmp_path / "cache"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "s3cret" not in result.stderr


def test_a_web_process_on_redis_says_where_builds_run_and_whether_redis_answers(tmp_path: Path) -> None:
    """With REDIS_URL set, `python3 app.py` runs no worker; with Redis away, nothing would build."""
    import threading
    import time

    from tests.services import free_ports

    app_port, redis_port = free_ports(2)
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py")],
        cwd=tmp_path,
        env={
            "PATH": "/usr/bin:/bin",
            "PORT": str(app_port),
            "HOST": "127.0.0.1",
            "CACHE_DIR": str(tmp_path / "cache"),
            "REDIS_URL": f"redis://:hunter2@127.0.0.1:{redis_port}/0",
        },
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    assert process.stderr is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("cannot be reached" in line for line in lines):
            time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(timeout=30)
        reader.join(10)
        process.stderr.close()
    text = "".join(lines)
    assert "no worker runs in this process" in text and "dramatiq tasks.worker" in text, text
    assert f"REDIS_URL=redis://:***@127.0.0.1:{redis_port}/0 cannot be reached" in text, text
    assert "hunter2" not in text


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://user:top/secret@db.example.com/app",
        "postgresql://user:se#cret@db.example.com/app",
        "postgresql://user:1234/5678@db.example.com/app",
        "postgresql://user:p@ss:w@rd@db.example.com/app",
        "postgresql://user:p%40ss@[::1]:5432/app",
        "postgresql://db.example.com/app?password=s3cret&sslmode=require",
        "redis://:secret@127.0.0.1:6379/0",
    ],
)
def test_no_password_reaches_a_message_or_the_start_line(url: str) -> None:
    from core.settings import describe, redact_url

    secrets = ("secret", "s3cret", "5678", "w@rd", "p%40ss", "cret")
    shown = redact_url(url)
    assert not any(secret in shown for secret in secrets), shown
    assert "***" in shown
    if url.startswith("postgresql"):
        try:
            settings = Settings.from_env({"DATABASE_URL": url}, dotenv=None)
        except ConfigError as error:
            assert not any(secret in str(error) for secret in secrets), error
        else:
            assert not any(secret in describe(settings) for secret in secrets), describe(settings)
