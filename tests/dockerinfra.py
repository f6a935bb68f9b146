"""A private Docker engine and a loopback registry, for the Docker tests and the benchmark.

Both start with the flags of ../shared/INFRA.md: the engine has no bridge, no iptables, and
proxy variables pointing at a closed loopback port, so that no pull ever leaves the machine;
the registry binds 127.0.0.1 and asks for a password (htpasswd, bcrypt).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import docker

CACHE = Path(__file__).resolve().parent / ".cache"
BUSYBOX = Path("/bin/busybox")
BASE_IMAGE = "local/busybox:1"
READY_SECONDS = 30.0
STOP_SECONDS = 20.0
# Mandatory (INFRA.md): a missing image must never make the engine call a public registry.
ENGINE_ENV = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
# Loopback only: never through a proxy from the environment.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
BASE_DOCKERFILE = 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'


def _package_installed(name: str) -> bool:
    if shutil.which("dpkg-query") is None:
        return False
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True, check=False, timeout=30
    )
    return done.returncode == 0 and "install ok installed" in done.stdout


def missing_tools() -> list[str]:
    """What the Docker tests need and this machine lacks, each with how to get it."""
    missing = []
    if shutil.which("dockerd") is None:
        missing.append("dockerd (apt-get install docker.io)")
    if not BUSYBOX.is_file() or not _package_installed("busybox-static"):
        missing.append("a static /bin/busybox (apt-get install busybox-static)")
    if shutil.which("docker-registry") is None:
        missing.append("docker-registry (apt-get install docker-registry)")
    if shutil.which("htpasswd") is None:
        missing.append("htpasswd (apt-get install apache2-utils)")
    if os.geteuid() != 0:
        missing.append("root (dockerd runs as root)")
    return missing


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _unmount_under(folder: Path) -> None:
    """Unmount whatever the engine left mounted under folder (exec/netns/default, overlays)."""
    with open("/proc/mounts", encoding="utf-8") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in sorted((p for p in points if p.startswith(str(folder) + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True, timeout=30)


@dataclass
class Engine:
    """One dockerd on a private socket, with its own data-root, exec-root and pidfile."""

    folder: Path
    process: subprocess.Popen[bytes]

    @property
    def docker_host(self) -> str:
        return f"unix://{self.folder / 'docker.sock'}"

    @classmethod
    def start(cls, folder: Path) -> Engine:
        folder.mkdir(parents=True, exist_ok=True)
        argv = [
            "dockerd",
            "--storage-driver",
            "overlay2",
            "--iptables=false",
            "--ip6tables=false",
            # A bridge would give containers private-range addresses.
            "--bridge=none",
            "--data-root",
            str(folder / "data"),
            "--exec-root",
            str(folder / "exec"),
            "--pidfile",
            str(folder / "dockerd.pid"),
            "-H",
            f"unix://{folder / 'docker.sock'}",
        ]
        # Nothing else is inherited: a lower-case no_proxy, say, would undo NO_PROXY.
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), **ENGINE_ENV}
        with (folder / "dockerd.log").open("wb") as output:
            process = subprocess.Popen(argv, env=env, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        engine = cls(folder, process)
        try:
            engine._wait_until_ready()
        except BaseException:
            engine.stop()
            raise
        return engine

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dockerd exited with code {self.process.returncode}: {self.log_tail()}")
            if (self.folder / "docker.sock").exists():
                try:
                    with self.client() as client:
                        client.ping()
                    return
                except docker.errors.DockerException:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"dockerd did not answer within {READY_SECONDS:g} s: {self.log_tail()}")

    def log_tail(self, count: int = 20) -> str:
        path = self.folder / "dockerd.log"
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else []
        return "\n".join(lines[-count:])

    def client(self) -> docker.APIClient:
        """A new client; the caller closes it (use `with`)."""
        return docker.APIClient(base_url=self.docker_host, version="auto", timeout=120)

    def remove_all_containers(self) -> None:
        """Remove every container, waiting for those the engine is removing itself."""
        deadline = time.monotonic() + STOP_SECONDS
        with self.client() as client:
            while rows := client.containers(all=True):
                for row in rows:
                    try:
                        client.remove_container(row["Id"], force=True)
                    except docker.errors.APIError as error:
                        # 404: gone meanwhile; 409: its removal is in progress.
                        if error.status_code not in (404, 409):
                            raise
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"containers left in the engine: {[row['Id'][:12] for row in rows]}")
                time.sleep(0.1)

    def stop(self) -> None:
        _stop_process(self.process)
        _unmount_under(self.folder)


@dataclass
class Registry:
    """The reference registry (Debian's docker-registry) on 127.0.0.1, with htpasswd auth."""

    folder: Path
    process: subprocess.Popen[bytes]
    port: int
    username: str
    password: str

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    @classmethod
    def start(cls, folder: Path) -> Registry:
        folder.mkdir(parents=True, exist_ok=True)
        username, password = "dyonisus", secrets.token_hex(12)
        hashed = subprocess.run(
            ["htpasswd", "-Bbn", username, password], capture_output=True, text=True, check=True, timeout=30
        ).stdout
        (folder / "htpasswd").write_text(hashed, encoding="utf-8")
        port = free_port()
        config = folder / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {folder / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n  secret: {secrets.token_hex(16)}\n"
            f"auth:\n  htpasswd:\n    realm: dyonisus-tests\n    path: {folder / 'htpasswd'}\n",
            encoding="utf-8",
        )
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        with (folder / "registry.log").open("wb") as output:
            process = subprocess.Popen(
                ["docker-registry", "serve", str(config)],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        registry = cls(folder, process, port, username, password)
        try:
            registry._wait_until_ready()
        except BaseException:
            registry.stop()
            raise
        return registry

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited with code {self.process.returncode}")
            try:
                with DIRECT.open(f"http://{self.url}/v2/", timeout=2):
                    return
            except urllib.error.HTTPError as error:
                error.close()
                if error.code == 401:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"docker-registry did not answer within {READY_SECONDS:g} s")

    def manifest_digest(self, name: str, reference: str) -> str | None:
        """The Docker-Content-Digest the registry has for name:reference (None when absent)."""
        request = urllib.request.Request(
            f"http://{self.url}/v2/{name}/manifests/{reference}",
            method="HEAD",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        )
        token = f"{self.username}:{self.password}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(token).decode())
        try:
            with DIRECT.open(request, timeout=10) as answer:
                return str(answer.headers["Docker-Content-Digest"])
        except urllib.error.HTTPError as error:
            error.close()
            if error.code == 404:
                return None
            raise

    def stop(self) -> None:
        _stop_process(self.process)


def ensure_base_image(engine: Engine) -> str:
    """local/busybox:1 in the engine: loaded from tests/.cache, else built from /bin/busybox and cached."""
    digest = hashlib.sha256(BUSYBOX.read_bytes()).hexdigest()[:16]
    cached = CACHE / f"busybox-base-{digest}.tar"
    with engine.client() as client:
        if cached.is_file():
            with cached.open("rb") as data:
                list(client.load_image(data))
            if client.images(name=BASE_IMAGE):
                return BASE_IMAGE
        with tempfile.TemporaryDirectory(prefix="busybox-base-") as folder:
            shutil.copy2(BUSYBOX, Path(folder) / "busybox")
            (Path(folder) / "Dockerfile").write_text(BASE_DOCKERFILE, encoding="utf-8")
            events = list(
                client.build(path=folder, tag=BASE_IMAGE, rm=True, forcerm=True, network_mode="none", decode=True)
            )
        errors = [event["error"] for event in events if "error" in event]
        if errors:
            raise RuntimeError(f"the base image cannot be built: {errors}")
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(".partial")
        with partial.open("wb") as output:
            for chunk in client.get_image(BASE_IMAGE):
                output.write(chunk)
        partial.replace(cached)
    return BASE_IMAGE


@dataclass
class DockerInfra:
    engine: Engine
    registry: Registry
    base_image: str

    @classmethod
    def start(cls, folder: Path) -> DockerInfra:
        engine = Engine.start(folder / "engine")
        try:
            registry = Registry.start(folder / "registry")
        except BaseException:
            engine.stop()
            raise
        infra = cls(engine, registry, BASE_IMAGE)
        try:
            ensure_base_image(engine)
        except BaseException:
            infra.stop()
            raise
        return infra

    def stop(self) -> None:
        try:
            self.engine.remove_all_containers()
        finally:
            self.registry.stop()
            self.engine.stop()
