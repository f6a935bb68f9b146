"""Deploy latency for create-vite's template-vanilla: push → first `pending` status, and push → `success`
against the same npm install + npm run build + packing run by hand, in the same run.

    python3 bench/deploy.py [--runs 5]

The service runs with its embedded defaults (in-process worker, SQLite, a local storage folder) behind
a loopback HTTP server, and talks to the fake GitHub of the tests (tests/fakegithub.py) on loopback;
the times are those at which the fake GitHub received each status. Both sides share one npm cache,
warmed by one unmeasured run of each first; the runs alternate.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from builders.base import build_environment  # noqa: E402
from builders.unpack import pack_folder  # noqa: E402
from core.settings import Settings  # noqa: E402
from tests.fakegithub import FakeGitHub  # noqa: E402
from tests.payloads import REPO, push_payload, sha_for, sign  # noqa: E402
from tests.services import create_vite_template  # noqa: E402

SECRET = "bench-webhook-secret"
APP_ID = "4242"
TARGET_PENDING_SECONDS = 0.3
TARGET_RATIO = 1.10
RUN_TIMEOUT = 600


def key_pair() -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public.decode()


class Deployer:
    """The service with its embedded defaults, on a loopback port, reporting to a fake GitHub."""

    def __init__(self, folder: Path) -> None:
        from werkzeug.serving import make_server

        folder.mkdir(parents=True, exist_ok=True)
        private, public = key_pair()
        self.fake = FakeGitHub(public_key=public, app_id=APP_ID)
        self.fake.start()
        self.server = make_server("127.0.0.1", 0, self._dispatch, threaded=True)
        port = self.server.server_port
        self.settings = Settings(
            github_app_id=APP_ID,
            github_private_key=private,
            github_webhook_secret=SECRET,
            github_api_url=self.fake.url,
            database_url=f"sqlite:///{folder}/dyonisus.db",
            storage_url=str(folder / "storage"),
            public_url=f"http://localhost:{port}",
            port=port,
            cache_dir=folder / "cache",
        )
        from app import create_app

        self.app = create_app(self.settings)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=30)

    def _dispatch(self, environ, start_response):  # type: ignore[no-untyped-def]
        return self.app(environ, start_response)

    @property
    def npm_cache(self) -> Path:
        return self.settings.cache_dir.resolve() / "npm"

    def run(self, template: Path, label: str) -> dict[str, float]:
        """Push the template as a new commit; seconds from the push to each step of the deployment."""
        sha = sha_for(label)
        self.fake.add_tarball(REPO, sha, source_dir=str(template))
        body = json.dumps(push_payload(sha)).encode()
        headers = {
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(SECRET, body),
            "Content-Type": "application/json",
        }
        wall, started = time.time(), time.monotonic()
        response = self.client.post("/api/github/webhooks", content=body, headers=headers)
        if response.status_code != 202:
            raise SystemExit(f"the service answered {response.status_code}: {response.text}")
        times = {"pending": self._status_time(sha, "pending", started) - started}
        times["success"] = self._status_time(sha, "success", started) - started
        (run,) = [r for r in self.fake.check_runs.values() if r.get("head_sha") == sha]
        deployment_id = str(run["external_id"])
        times.update(self._log_steps(deployment_id, wall))
        self._wait_reported(deployment_id, started)
        return times

    def _wait_reported(self, deployment_id: str, started: float) -> None:
        """Until the check run is completed too, so that no report of this run overlaps the next."""
        while time.monotonic() - started < RUN_TIMEOUT:
            runs = list(self.fake.check_runs.values())
            if any(r.get("external_id") == deployment_id and r.get("status") == "completed" for r in runs):
                return
            time.sleep(0.005)
        raise SystemExit(f"the check run of {deployment_id} was not completed within {RUN_TIMEOUT} s")

    def _log_steps(self, deployment_id: str, wall: float) -> dict[str, float]:
        """When the build log says each command started and ended, in seconds after the push."""
        log = self.client.get(f"/api/deploy/{deployment_id}/logs").text
        steps: dict[str, float] = {}
        for line in log.splitlines():
            stamp, _, text = line.partition(" ")
            at = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp() - wall
            if text.startswith("==> $ npm install"):
                steps["install started"] = at
            elif text.startswith("==> $ npm run build"):
                steps["build started"] = at
            elif text.startswith("==> packing"):
                steps["packing started"] = at
        return steps

    def _status_time(self, sha: str, state: str, started: float) -> float:
        while time.monotonic() - started < RUN_TIMEOUT:
            for call in self.fake.requests("POST", rf"/statuses/{sha}"):
                if call.body.get("state") == state:
                    return call.at
                if call.body.get("state") in ("failure", "error"):
                    raise SystemExit(f"the deployment failed: {call.body}")
            time.sleep(0.005)
        raise SystemExit(f"no {state} status for {sha} within {RUN_TIMEOUT} s")

    def stop(self) -> None:
        self.client.close()
        self.server.shutdown()
        self.app.extensions["dyonisus"].stop()
        self.fake.stop()


def by_hand(template: Path, folder: Path, npm_cache: Path) -> dict[str, float]:
    """The same work without the service: npm install, npm run build, pack dist/ as the builder does."""
    work = folder / f"by-hand-{uuid.uuid4().hex[:8]}"
    shutil.copytree(template, work)
    home = folder / f"home-{uuid.uuid4().hex[:8]}"
    (home / "tmp").mkdir(parents=True)
    env = build_environment(home, npm_cache=npm_cache)
    times: dict[str, float] = {}
    started = time.monotonic()
    for name, argv in (("install", ["npm", "install"]), ("build", ["npm", "run", "build"])):
        begun = time.monotonic()
        subprocess.run(argv, cwd=work, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times[name] = time.monotonic() - begun
    begun = time.monotonic()
    pack_folder(work / "dist", folder / f"{work.name}.tar.gz")
    times["pack"] = time.monotonic() - begun
    times["total"] = time.monotonic() - started
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)
    return times


def service_phases(times: dict[str, float]) -> dict[str, float]:
    """Split a deployment into the service's own work and the npm commands it ran."""
    return {
        "before npm install": times["install started"],
        "npm install": times["build started"] - times["install started"],
        "npm run build": times["packing started"] - times["build started"],
        "pack, store, report": times["success"] - times["packing started"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    if shutil.which("npm") is None:
        print("npm is not installed", file=sys.stderr)
        return 2
    folder = Path(tempfile.mkdtemp(prefix="dyonisus-bench-deploy-"))
    template = create_vite_template(folder / "template-vanilla")
    deployer = Deployer(folder / "service")
    service: list[dict[str, float]] = []
    manual: list[dict[str, float]] = []
    try:
        deployer.run(template, "warm-up")
        by_hand(template, folder, deployer.npm_cache)
        for run in range(args.runs):
            service.append(deployer.run(template, f"run {run}"))
            manual.append(by_hand(template, folder, deployer.npm_cache))
            print(
                f"  run {run + 1}: pending {service[-1]['pending']:.3f} s, success {service[-1]['success']:.2f} s, "
                f"by hand {manual[-1]['total']:.2f} s"
            )
    finally:
        deployer.stop()
        shutil.rmtree(folder, ignore_errors=True)

    def median(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(run[key] for run in runs)

    phases = [service_phases(run) for run in service]
    ratio = median(service, "success") / median(manual, "total")
    print()
    print(
        f"push -> first pending status: median {median(service, 'pending'):.3f} s  (target < {TARGET_PENDING_SECONDS} s)"
    )
    print(f"push -> success status:       median {median(service, 'success'):.2f} s")
    print(f"npm install + build + pack:   median {median(manual, 'total'):.2f} s (by hand)")
    print(f"ratio service / by hand:      {ratio:.2f}  (target <= {TARGET_RATIO:.2f})")
    print()
    print("where the time goes (medians, seconds):")
    for name in phases[0]:
        print(f"  service  {name:<22} {median(phases, name):6.3f}")
    for name in ("install", "build", "pack"):
        print(f"  by hand  {name:<22} {median(manual, name):6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
