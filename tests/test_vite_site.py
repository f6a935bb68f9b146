"""End to end with a real site no one here wrote: create-vite's template-vanilla, built and served."""

from __future__ import annotations

import io
import re
import shutil
import tarfile
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import Service, require
from tests.payloads import sha_for
from tests.services import CREATE_VITE, chromium_binary, create_vite_template, dump_dom, text_of

BUILD_SECONDS = 300
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
CONTENT_TYPES[".png"] = "image/png"


class References(HTMLParser):
    """Every src and href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.extend(value for name, value in attrs if name in ("src", "href") and value)


def local_references(html: str) -> list[str]:
    """The page's own assets: no other host, no fragment-only links."""
    parser = References()
    parser.feed(html)
    paths = []
    for reference in parser.found:
        parts = urlsplit(reference)
        if parts.scheme or parts.netloc or not parts.path:
            continue
        paths.append(parts.path if parts.path.startswith("/") else "/" + parts.path)
    return paths


@pytest.fixture
def template(tmp_path: Path) -> Path:
    require(shutil.which("npm") is not None, "npm is not installed (Node 20 and npm from Debian)")
    return create_vite_template(tmp_path / "template-vanilla")


def deploy(make_service: Callable[..., Service], template: Path, label: str) -> tuple[Service, str, str]:
    service = make_service()
    sha = sha_for(label)
    deployment_id = service.push(sha, source_dir=str(template))
    data = service.wait(deployment_id, timeout=BUILD_SECONDS)
    assert data["status"] == "READY", f"{data}\n{_log(service, deployment_id)}"
    return service, sha, deployment_id


def _log(service: Service, deployment_id: str) -> str:
    with service.http() as client:
        return client.get(f"/api/deploy/{deployment_id}/logs").text[-4000:]


def _artifact(service: Service, deployment_id: str) -> dict[str, bytes]:
    with service.http() as client:
        response = client.get(f"/api/deploy/{deployment_id}/artifact")
    assert response.status_code == 200
    files = {}
    with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is not None:
                files["/" + member.name.removeprefix("./")] = handle.read()
    return files


def test_create_vite_template_is_built_and_served(make_service: Callable[..., Service], template: Path) -> None:
    assert (template / ".gitignore").is_file() and not (template / "package-lock.json").exists()
    service, sha, deployment_id = deploy(make_service, template, "create-vite")

    page = service.preview(deployment_id)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<title>Vite + JS</title>" in page.text
    assert "/src/main.js" not in page.text, "the page is the source, not the build"
    references = local_references(page.text)
    scripts = [path for path in references if path.endswith(".js")]
    assert scripts and all(path.startswith("/assets/") for path in scripts), references
    assert any(path.endswith(".css") for path in references), references
    for path in references:
        asset = service.preview(deployment_id, path)
        assert asset.status_code == 200, path
        expected = CONTENT_TYPES.get(Path(path).suffix)
        assert expected is None or asset.headers["content-type"].startswith(expected), (path, asset.headers)

    # Every file of the build, including those only the JS and CSS point to, is served as built.
    artifact = _artifact(service, deployment_id)
    assert "/index.html" in artifact and any(name.endswith(".png") for name in artifact)
    for path, content in artifact.items():
        served = service.preview(deployment_id, path)
        assert served.status_code == 200 and served.content == content, path
    assert service.preview(deployment_id, "/src/main.js").status_code == 404

    states = [status["state"] for status in service.fake.statuses(sha)]
    assert states == ["pending", "success"]
    with service.http() as client:
        details = client.get(f"/deployments/{deployment_id}")
    assert details.status_code == 200
    assert sha in details.text and ">READY<" in details.text
    log = re.search(r'<pre class="log" id="log">(.*?)</pre>', details.text, re.S)
    assert log is not None, "the details page shows no log"
    assert "$ npm install" in log.group(1) and "$ npm run build" in log.group(1)
    assert "vite build" in log.group(1) and "built in" in log.group(1)


def test_create_vite_template_runs_in_chromium(
    make_service: Callable[..., Service], template: Path, tmp_path: Path
) -> None:
    require(chromium_binary() is not None, "Chromium is not installed (apt-get install -y chromium)")
    service, _sha, deployment_id = deploy(make_service, template, "create-vite in chromium")

    dom = dump_dom(f"http://{deployment_id}.localhost:{service.port}/", tmp_path / "chromium-profile")

    # What the template's JS writes into the empty <div id="app">, read from its own sources.
    main = (template / "src" / "main.js").read_text(encoding="utf-8")
    counter = (template / "src" / "counter.js").read_text(encoding="utf-8")
    heading = re.search(r"<h1>(.*?)</h1>", main)
    label = re.search(r"`([^`$]*)\$\{counter\}`", counter)
    assert heading and label, f"{CREATE_VITE} changed its template; update this test"
    assert '<div id="app"></div>' not in dom, "the page's JS did not run"
    app = re.search(r'<div id="app">(.*)</div>', dom, re.S)
    assert app is not None, dom[:2000]
    text = text_of(app.group(1))
    assert heading.group(1) in text
    assert f"{label.group(1)}0" in text, "counter.js did not set up the button"
    assert re.search(r'<img src="/assets/hero-[^"]+\.png"', dom), "the imported image is not in the page"
