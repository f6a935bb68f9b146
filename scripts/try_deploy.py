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
from tests.fakegithub import FakeGitHub
from tests.keys import app_key_pair
from tests.payloads import REPO, push_payload, sha_for, sign

SECRET = "local webhook secret"
APP_ID = "1"


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
    app = create_app(settings)
    server = make_server("127.0.0.1", args.port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    sha = sha_for(f"{args.site.resolve()}{time.time()}")
    github.add_tarball(REPO, sha, source_dir=str(args.site))
    body = json.dumps(push_payload(sha, message="Try Dyonisus Deploy")).encode()
    headers = {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(SECRET, body),
        "Content-Type": "application/json",
    }
    base = f"http://127.0.0.1:{args.port}"
    answer = httpx.post(f"{base}/api/github/webhooks", content=body, headers=headers, trust_env=False).json()
    (deployment_id,) = answer["deployments"]
    print(f"push accepted: deployment {deployment_id}; building…")
    print(f"details: {settings.public_url}/deployments/{deployment_id}")
    try:
        while True:
            data = httpx.get(f"{base}/api/deploy/{deployment_id}", trust_env=False).json()
            if data["status"] in ("READY", "FAILED", "CANCELLED"):
                break
            time.sleep(0.5)
        print(f"status: {data['status']} {data['reason'] or ''}".rstrip())
        if data["url"]:
            print(f"preview: {data['url']}")
        for status in github.statuses(sha):
            print(f"GitHub got commit status {status['state']}: {status['description']}")
        print("Ctrl-C to stop.")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        app.extensions["dyonisus"].stop()
        github.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
