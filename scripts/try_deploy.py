"""Try a deploy on this machine, without GitHub: a local stand-in for GitHub, the service, one push.

    python3 scripts/try_deploy.py path/to/site [--port 3000]

It starts the fake GitHub the tests use (a real HTTP server on loopback), starts Dyonisus Deploy
against it with the embedded defaults in a temporary folder, sends a signed `push` of the folder,
waits for the build and prints the preview address. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
from werkzeug.serving import make_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import create_app
from core.settings import Settings
from models import WebhookDelivery
from tests.fakegithub import FakeGitHub
from tests.keys import app_key_pair
from tests.payloads import REPO, push_payload, sha_for, sign

SECRET = "local webhook secret"
APP_ID = "1"


def deploy(github: FakeGitHub, settings: Settings, site: Path) -> None:
    """Push the folder, wait for its deployment, print what GitHub was told."""
    sha = sha_for(f"{site.resolve()}{time.time()}")
    github.add_tarball(REPO, sha, source_dir=str(site))
    body = json.dumps(push_payload(sha, message="Try Dyonisus Deploy")).encode()
    delivery = str(uuid.uuid4())
    headers = {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": sign(SECRET, body),
        "Content-Type": "application/json",
    }
    base = f"http://127.0.0.1:{settings.port}"
    answer = httpx.post(f"{base}/api/github/webhooks", content=body, headers=headers, trust_env=False)
    answer.raise_for_status()
    # The webhook answers once the delivery is stored; the service turns it into a deployment next.
    deployment_id = _deployment_of(delivery)
    print(f"push accepted: deployment {deployment_id}; building…", flush=True)
    print(f"details: {settings.public_url}/deployments/{deployment_id}", flush=True)
    while True:
        data = httpx.get(f"{base}/api/deploy/{deployment_id}", trust_env=False).json()
        if data["status"] in ("READY", "FAILED", "CANCELLED"):
            break
        time.sleep(0.5)
    print(f"status: {data['status']} {data['reason'] or ''}".rstrip(), flush=True)
    if data["url"]:
        print(f"preview: {data['url']}", flush=True)
    for status in github.statuses(sha):
        print(f"GitHub got commit status {status['state']}: {status['description']}", flush=True)


def _deployment_of(delivery: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = WebhookDelivery.get_or_none(WebhookDelivery.delivery_id == delivery)
        if row is not None and row.state != "received":
            deployments = (row.result or {}).get("deployments") or []
            if row.state != "routed" or len(deployments) != 1:
                raise SystemExit(f"the push did not make one deployment: {row.state} {row.result}")
            return str(deployments[0])
        time.sleep(0.05)
    raise SystemExit(f"the push was not routed within {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("site", type=Path, help="a folder with package.json (npm build) or index.html")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args()
    if not args.site.is_dir():
        parser.error(f"{args.site} is not a folder")

    private, public = app_key_pair()
    github = FakeGitHub(public_key=public, app_id=APP_ID).start()
    work = Path(tempfile.mkdtemp(prefix="dyonisus-try-"))
    settings = Settings(
        github_app_id=APP_ID,
        github_private_key=private,
        github_webhook_secret=SECRET,
        github_api_url=github.url,
        database_url=f"sqlite:///{work}/dyonisus.db",
        storage_url=str(work / "storage"),
        cache_dir=work / "cache",
        public_url=f"http://localhost:{args.port}",
        port=args.port,
    )
    app = server = None
    try:
        app = create_app(settings)
        server = make_server("127.0.0.1", args.port, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        deploy(github, settings, args.site)
        print("Ctrl-C to stop.", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.shutdown()
        if app is not None:
            app.extensions["dyonisus"].stop()
        github.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
