"""Webhook intake: signed ~8 KB push deliveries against the service under gunicorn, beside a bare endpoint.

    python3 bench/intake.py [--requests 2000] [--rounds 6] [--concurrency 8] [--client socket|httpx] [--postgres]

Both apps run under the same gunicorn settings as the Procfile's web process (its gunicorn.conf.py,
2 workers, 4 threads). The service has REDIS_URL set, so it only stores the deliveries (no worker
runs); its database is a temporary SQLite file (or --database-url). The load comes from a bounded
number of keep-alive clients on loopback, each in a process of its own: by default each writes its
requests out beforehand and sends them on a plain socket, so that the clients take little of the
processors the servers run on (--client httpx: an httpx.Client each, which takes about as much as
a server does). Prints requests/s, p50, p99 and the servers' CPU time per delivery for each app,
and the ratio.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.settings import Settings  # noqa: E402
from tasks.broker import queue_namespace  # noqa: E402
from tests.payloads import push_payload, sha_for, sign  # noqa: E402
from tests.services import REDIS_URL, drop_redis_keys, postgres_database, redis_reachable  # noqa: E402

SECRET = "bench-webhook-secret"
PAYLOAD_BYTES = 8 * 1024
TARGET_RATIO = 0.8
TARGET_P99_MS = 25.0


def padded_push(index: int, *, repositories: int = 1) -> bytes:
    """A push built from GitHub's example (about 8 KB), its commit message padded to PAYLOAD_BYTES.

    With repositories > 1 the pushes are spread over that many repositories (one lane each).
    """
    payload = push_payload(sha_for(f"bench {index}"), message=f"Bench commit {index}")
    if repositories > 1:
        repository = payload["repository"]
        number = index % repositories
        repository["id"] += number
        repository["name"] = f"{repository['name']}-{number}"
        repository["full_name"] = f"{repository['full_name']}-{number}"
    head = payload["head_commit"]  # also payload["commits"][0]: each character counts twice
    room = PAYLOAD_BYTES - len(json.dumps(payload).encode())
    head["message"] += " " + "x" * max(0, room // 2 - 1)
    return json.dumps(payload).encode()


def private_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()


@dataclass
class Server:
    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """User and system CPU time used so far by gunicorn's master and its workers."""
        ticks = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # the process ended meanwhile
            pid, parent = int(stat.parent.name), int(fields[1])
            if self.pid in (pid, parent):
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")


@contextmanager
def gunicorn(app: str, env: dict[str, str], folder: Path, *, workers: int, threads: int) -> Iterator[Server]:
    """gunicorn on a loopback port, as the Procfile runs it.

    The socket is bound here and handed over, so that no other process can take the port between.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    argv = [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "gunicorn.conf.py")]
    argv += ["--bind", f"fd://{listener.fileno()}"]
    argv += ["--workers", str(workers), "--threads", str(threads), "--log-level", "warning", app]
    log = (folder / f"gunicorn-{port}.log").open("wb")
    process = subprocess.Popen(
        argv,
        cwd=folder,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        pass_fds=(listener.fileno(),),
    )
    listener.close()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, folder / f"gunicorn-{port}.log")
        yield Server(url, process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    with httpx.Client(trust_env=False, timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"gunicorn exited:\n{log.read_text()[-3000:]}")
            try:
                if client.get(url + "/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise SystemExit(f"gunicorn did not answer in 60 s:\n{log.read_text()[-3000:]}")


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    latencies: list[float]
    statuses: dict[int, int]
    server_cpu: float = 0.0  # seconds

    @property
    def cpu_per_request(self) -> float:
        """Microseconds of the server's CPU time per delivery."""
        return self.server_cpu / self.requests * 1e6

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


def load(server: Server, bodies: list[bytes], *, concurrency: int, name: str, client: str = "socket") -> Result:
    """Send every body once, `concurrency` at a time, each with a new delivery id.

    Each of the `concurrency` clients is a process of its own, so that the clients do not queue
    on one interpreter lock and the answer times are the server's."""
    signed = [(body, sign(SECRET, body)) for body in bodies]
    context = multiprocessing.get_context("fork")
    go = context.Event()
    pipes = []
    processes = []
    for index in range(concurrency):
        receiver, sender = context.Pipe(duplex=False)
        share = signed[index::concurrency]
        process = context.Process(target=_client, args=(server.url, share, go, sender, client))
        process.start()
        sender.close()
        pipes.append(receiver)
        processes.append(process)
    for receiver in pipes:
        receiver.recv()  # connected and ready
    cpu = server.cpu_seconds()
    started = time.perf_counter()
    go.set()
    answers = [receiver.recv() for receiver in pipes]
    seconds = time.perf_counter() - started
    cpu = server.cpu_seconds() - cpu
    for process in processes:
        process.join()
    latencies = [latency for mine, _ in answers for latency in mine]
    statuses: dict[int, int] = {}
    for _, codes in answers:
        for code, count in codes.items():
            statuses[code] = statuses.get(code, 0) + count
    return Result(name, len(bodies), seconds, latencies, statuses, cpu)


def _client(url: str, share: list[tuple[bytes, str]], go: Any, pipe: Any, kind: str = "socket") -> None:
    if kind == "httpx":
        mine, codes = _httpx_client(url, share, go, pipe)
    else:
        mine, codes = _socket_client(url, share, go, pipe)
    pipe.send((mine, codes))
    pipe.close()


def _headers(body: bytes, signature: str) -> dict[str, str]:
    return {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": signature,
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/bench",
    }


def _socket_client(url: str, share: list[tuple[bytes, str]], go: Any, pipe: Any) -> tuple[list[float], dict[int, int]]:
    """Keep-alive HTTP/1.1 over a plain socket, every request written out before the clock starts:
    a client that costs the two cores a few microseconds per request, so that what it measures is
    the server's answer time, not its own turn on the processor."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    address = (host, int(port))
    requests = []
    for body, signature in share:
        lines = ["POST /api/github/webhooks HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in _headers(body, signature).items()]
        requests.append(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    connection = _HTTPConnection(address)
    connection.exchange(f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    mine: list[float] = []
    codes: dict[int, int] = {}
    pipe.send("ready")
    go.wait()
    for request in requests:
        started = time.perf_counter()
        code = connection.exchange(request)
        mine.append(time.perf_counter() - started)
        codes[code] = codes.get(code, 0) + 1
    connection.close()
    return mine, codes


class _HTTPConnection:
    """One request at a time on a keep-alive connection, opened again when the server closed it."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def exchange(self, request: bytes) -> int:
        """Send one request and read its whole answer; the status code, 0 when none came."""
        for _ in range(2):  # once more on a connection the server had closed while idle
            if self.sock is None:
                self.sock = self._connect()
            try:
                self.sock.sendall(request)
                code, keep = self._answer(self.sock)
            except OSError:
                code, keep = 0, False
            if not keep:
                self.close()
            if code:
                return code
        return 0

    @staticmethod
    def _answer(sock: socket.socket) -> tuple[int, bool]:
        """The status code and whether the connection stays open. Interim (1xx) answers are
        skipped; an answer without Content-Length runs to the end of the connection."""
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    return 0, False
                data += chunk
            head, _, data = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            try:
                code = int(lines[0].split()[1])
            except (IndexError, ValueError):
                return 0, False  # not HTTP: count it as no answer and connect again
            if not 100 <= code < 200:
                break
        fields = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
        if "content-length" not in fields:
            while sock.recv(65536):
                pass
            return code, False
        length = int(fields["content-length"])
        while len(data) < length:
            chunk = sock.recv(65536)
            if not chunk:
                return code, False
            data += chunk
        return code, fields.get("connection", "").lower() != "close"

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _httpx_client(url: str, share: list[tuple[bytes, str]], go: Any, pipe: Any) -> tuple[list[float], dict[int, int]]:
    mine: list[float] = []
    codes: dict[int, int] = {}
    with httpx.Client(base_url=url, trust_env=False, timeout=30) as client:
        client.get("/healthz")  # open the keep-alive connection before the clock starts
        pipe.send("ready")
        go.wait()
        for body, signature in share:
            started = time.perf_counter()
            try:
                code = client.post("/api/github/webhooks", content=body, headers=_headers(body, signature)).status_code
            except httpx.TransportError:
                code = 0  # no answer at all
            mine.append(time.perf_counter() - started)
            codes[code] = codes.get(code, 0) + 1
    return mine, codes


def summarize(runs: list[Result]) -> tuple[float, float, float, float]:
    """Median requests/s, p50, p99 and server CPU per delivery over the rounds."""
    return (
        statistics.median(r.rate for r in runs),
        statistics.median(r.percentile(0.50) for r in runs),
        statistics.median(r.percentile(0.99) for r in runs),
        statistics.median(r.cpu_per_request for r in runs),
    )


def report(result: Result) -> str:
    return (
        f"{result.name:<16} {result.rate:8.0f} req/s   p50 {result.percentile(0.50):6.1f} ms   "
        f"p99 {result.percentile(0.99):6.1f} ms   server CPU {result.cpu_per_request:5.0f} µs/delivery   "
        f"answers {dict(sorted(result.statuses.items()))}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="deliveries per measured round")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--rounds", type=int, default=6, help="measured rounds per app, in pairs run back to back (ABBA order)"
    )
    parser.add_argument(
        "--client",
        choices=("socket", "httpx"),
        default="socket",
        help="socket: requests written out beforehand on a plain socket; httpx: an httpx.Client per process",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--database-url", help="default: a temporary SQLite file")
    parser.add_argument(
        "--postgres", action="store_true", help="use a new database on the local PostgreSQL, dropped afterwards"
    )
    parser.add_argument(
        "--repositories", type=int, default=1, help="spread pushes over this many repositories (default: one branch)"
    )
    args = parser.parse_args()
    if not redis_reachable():
        print(f"Redis is not reachable at {REDIS_URL}", file=sys.stderr)
        return 2

    folder = Path(tempfile.mkdtemp(prefix="dyonisus-bench-intake-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
        if args.postgres:
            args.database_url = stack.enter_context(postgres_database())
        return measure(args, folder, args.database_url or f"sqlite:///{folder}/dyonisus.db")


def measure(args: argparse.Namespace, folder: Path, database_url: str) -> int:
    service_env = {
        "GITHUB_APP_ID": "1",
        "GITHUB_PRIVATE_KEY": private_key(),
        "GITHUB_WEBHOOK_SECRET": SECRET,
        # Never called: the web process does not talk to GitHub.
        "GITHUB_API_URL": "http://127.0.0.1:9",
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "STORAGE_URL": str(folder / "storage"),
        "CACHE_DIR": str(folder / "cache"),
    }
    namespace = queue_namespace(Settings(database_url=database_url))
    size = len(padded_push(0))
    spread = {"repositories": args.repositories}
    warmup = [padded_push(-1 - index, **spread) for index in range(300)]
    rounds = [[padded_push(r * args.requests + i, **spread) for i in range(args.requests)] for r in range(args.rounds)]
    print(f"{args.requests} deliveries of {size} bytes per round, concurrency {args.concurrency}, ", end="")
    print(
        f"gunicorn --workers {args.workers} --threads {args.threads}, database {database_url.split(':')[0]}, ", end=""
    )
    print(f"{args.repositories} repositories, {args.client} clients")

    results: dict[str, list[Result]] = {"service": [], "bare endpoint": []}
    ratios: list[float] = []
    settings = {"workers": args.workers, "threads": args.threads}
    try:
        with (
            gunicorn("app:create_app()", service_env, folder, **settings) as service,
            # The same settings, since gunicorn.conf.py checks them before it loads either app.
            gunicorn("bench.bare_app:create_app()", service_env, folder, **settings) as bare,
        ):
            apps = {"service": service, "bare endpoint": bare}
            for name, server in apps.items():
                load(server, warmup, concurrency=args.concurrency, name=name, client=args.client)
            for index, bodies in enumerate(rounds):
                # A pair of rounds, one per app, in turn first: the machine's speed drifts (other
                # work, CPU steal), and the ratio of each pair compares two moments close together.
                order = list(apps) if index % 2 == 0 else list(reversed(apps))
                pair = {}
                for name in order:
                    pair[name] = load(apps[name], bodies, concurrency=args.concurrency, name=name, client=args.client)
                    results[name].append(pair[name])
                    print("  " + report(pair[name]))
                ratios.append(pair["service"].rate / pair["bare endpoint"].rate)
    finally:
        drop_redis_keys(namespace)

    print()
    summary = {name: summarize(runs) for name, runs in results.items()}
    for name, (rate, p50, p99, cpu) in summary.items():
        print(
            f"{name:<16} {rate:8.0f} req/s   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   "
            f"server CPU {cpu:5.0f} µs/delivery   (medians of {len(rounds)} rounds)"
        )
    ratio = statistics.median(ratios)
    print(
        f"ratio service / bare endpoint: {ratio:.2f}, the median of {len(ratios)} pairs of rounds "
        f"({min(ratios):.2f}–{max(ratios):.2f})  (target >= {TARGET_RATIO})"
    )
    print(f"service p99: {summary['service'][2]:.1f} ms  (target < {TARGET_P99_MS:.0f} ms)")
    cpu_ratio = summary["bare endpoint"][3] / summary["service"][3]
    print(f"bare endpoint's server CPU per delivery / the service's: {cpu_ratio:.2f}")
    bad = {code: n for r in results["service"] for code, n in r.statuses.items() if code != 202}
    if bad:
        print(f"the service gave answers other than 202: {bad}; its log says:", file=sys.stderr)
        for log in sorted(folder.glob("gunicorn-*.log")):
            print(log.read_text(encoding="utf-8", errors="replace")[-6000:], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
