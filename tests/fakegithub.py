"""A fake GitHub: a real HTTP server on loopback that checks App JWTs and records every call."""

from __future__ import annotations

import io
import itertools
import json
import re
import secrets
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import jwt

Handler = Callable[["Request"], "Reply"]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    match: re.Match[str] | None = None
    query: str = ""

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None


@dataclass
class Call:
    method: str
    path: str
    body: Any
    status: int
    at: float


class FakeGitHub:
    """Routes, a call log, and an error on any request it does not know."""

    def __init__(self, *, public_key: str, app_id: str, prefix: str = "") -> None:
        self.public_key = public_key
        self.app_id = app_id
        self.prefix = prefix.rstrip("/")
        self.calls: list[Call] = []
        self.unmatched: list[str] = []
        self.jwt_errors: list[str] = []
        self.tokens: dict[str, int] = {}
        self.token_requests = 0
        self.tarballs: dict[tuple[str, str], bytes] = {}
        self.failures: list[tuple[str, re.Pattern[str], int, int]] = []
        self.check_runs: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, dict[str, Any]] = {}
        self.permissions: dict[tuple[str, str], str] = {}
        self.deployments: dict[int, dict[str, Any]] = {}
        self.deployment_statuses: dict[int, list[dict[str, Any]]] = {}
        self.reactions: list[tuple[int, str]] = []
        self.commit_messages: dict[str, str] = {}
        self.bot_login = "dyonisus-deploy[bot]"
        self.pulls: dict[int, dict[str, Any]] = {}
        self.pull_commits: dict[int, list[str]] = {}
        self.files: dict[tuple[str, str], str] = {}
        # What POST /app-manifests/{code}/conversions answers for each code.
        self.manifest_conversions: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self._ids = itertools.count(1000)
        self.routes: list[tuple[str, re.Pattern[str], Handler, bool]] = []
        self._install_routes()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # -- lifecycle -------------------------------------------------------
    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def url(self) -> str:
        return self.origin + self.prefix

    def start(self) -> FakeGitHub:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- test set-up -----------------------------------------------------
    def add_tarball(
        self,
        repo: str,
        sha: str,
        files: dict[str, str | bytes] | None = None,
        *,
        raw: bytes | None = None,
        source_dir: str | None = None,
    ) -> None:
        """Serve a tarball for repo@sha, laid out as GitHub does (one top-level folder)."""
        if raw is None:
            raw = make_tarball(f"{repo.replace('/', '-')}-{sha[:7]}", files or {}, source_dir=source_dir)
        self.tarballs[(repo.lower(), sha)] = raw

    def fail(self, method: str, pattern: str, status: int, *, times: int = 1) -> None:
        """Answer the next `times` matching requests with `status`."""
        self.failures.append((method, re.compile(pattern), status, times))

    def route(self, method: str, pattern: str, *, auth: bool = True) -> Callable[[Handler], Handler]:
        def decorator(handler: Handler) -> Handler:
            self.routes.insert(0, (method, re.compile(f"^{pattern}$"), handler, auth))
            return handler

        return decorator

    # -- what GitHub received -------------------------------------------
    def requests(self, method: str, pattern: str) -> list[Call]:
        regex = re.compile(pattern)
        with self.lock:
            return [c for c in self.calls if c.method == method and regex.search(c.path)]

    def statuses(self, sha: str | None = None) -> list[dict[str, Any]]:
        return [c.body for c in self.requests("POST", rf"/statuses/{sha or ''}") if c.status < 300]

    def check_run_calls(self) -> list[Call]:
        return [c for c in self.calls if "/check-runs" in c.path and c.method in ("POST", "PATCH")]

    # -- server ----------------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; without this each answer waits for a delayed ACK.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = Request(self.command, parts.path, dict(self.headers.items()), body, query=parts.query)
                reply = fake.handle(request)
                payload = (
                    reply.raw
                    if reply.raw is not None
                    else (b"" if reply.body is None else json.dumps(reply.body).encode())
                )
                self.send_response(reply.status)
                headers = {"Content-Type": "application/json; charset=utf-8", **reply.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        return RequestHandler

    def handle(self, request: Request) -> Reply:
        path = request.path
        if path.startswith(self.prefix + "/"):
            path = path[len(self.prefix) :]
        elif not path.startswith("/_codeload/"):
            return self._record(request, Reply(404, {"message": f"not under {self.prefix}"}))
        request.path = path
        for method, pattern, handler, auth in self.routes:
            match = pattern.match(path)
            if method != request.method or match is None:
                continue
            request.match = match
            failure = self._injected_failure(request)
            if failure is not None:
                return self._record(request, failure)
            if auth and not self._authorized(request):
                return self._record(request, Reply(401, {"message": "Bad credentials"}))
            try:
                reply = handler(request)
            except Exception as error:  # noqa: BLE001 - a bug in the fake must be visible
                reply = Reply(500, {"message": f"fake GitHub error: {error!r}"})
            return self._record(request, reply)
        with self.lock:
            self.unmatched.append(f"{request.method} {path}")
        return self._record(request, Reply(404, {"message": "Not Found (fake GitHub has no such route)"}))

    def _record(self, request: Request, reply: Reply) -> Reply:
        try:
            body = request.json
        except ValueError:
            body = request.body
        with self.lock:
            self.calls.append(Call(request.method, request.path, body, reply.status, time.monotonic()))
        return reply

    def _injected_failure(self, request: Request) -> Reply | None:
        with self.lock:
            for index, (method, pattern, status, times) in enumerate(self.failures):
                if method == request.method and pattern.search(request.path):
                    if times <= 1:
                        self.failures.pop(index)
                    else:
                        self.failures[index] = (method, pattern, status, times - 1)
                    return Reply(status, {"message": f"injected {status}"})
        return None

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("Authorization") or request.headers.get("authorization") or ""
        scheme, _, token = header.partition(" ")
        return scheme.lower() in ("token", "bearer") and token in self.tokens

    def check_jwt(self, request: Request) -> str | None:
        """None when the App JWT follows GitHub's rules, else what is wrong."""
        header = request.headers.get("Authorization") or ""
        if not header.startswith("Bearer "):
            return "no Bearer JWT"
        token = header[len("Bearer ") :]
        try:
            unverified = jwt.get_unverified_header(token)
            if unverified.get("alg") != "RS256":
                return f"alg is {unverified.get('alg')}, not RS256"
            claims = jwt.decode(token, self.public_key, algorithms=["RS256"], options={"verify_iat": False})
        except jwt.PyJWTError as error:
            return f"JWT rejected: {error}"
        now = time.time()
        if str(claims.get("iss")) != str(self.app_id):
            return f"iss is {claims.get('iss')!r}, not the app id"
        if not claims["iat"] <= now - 30:
            return "iat is not in the past (GitHub advises 60 s back for clock drift)"
        if claims["exp"] > now + 600:
            return "exp is more than 10 minutes ahead"
        return None

    # -- routes ----------------------------------------------------------
    def _install_routes(self) -> None:
        @self.route("POST", r"/app/installations/(\d+)/access_tokens", auth=False)
        def access_token(request: Request) -> Reply:
            problem = self.check_jwt(request)
            if problem:
                self.jwt_errors.append(problem)
                return Reply(401, {"message": problem})
            token = "ghs_" + secrets.token_hex(20)
            with self.lock:
                self.tokens[token] = int(request.match[1])  # type: ignore[index]
                self.token_requests += 1
            expires = datetime.now(UTC) + timedelta(hours=1)
            return Reply(
                201,
                {
                    "token": token,
                    "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "permissions": {},
                    "repository_selection": "all",
                },
            )

        @self.route("GET", r"/repos/([^/]+/[^/]+)/tarball/(.+)")
        def tarball(request: Request) -> Reply:
            repo, ref = request.match[1], request.match[2]  # type: ignore[index]
            if (repo.lower(), ref) not in self.tarballs:
                return Reply(404, {"message": "Not Found"})
            return Reply(302, headers={"Location": f"{self.origin}/_codeload/{repo}/tar.gz/{ref}"})

        @self.route("GET", r"/_codeload/([^/]+/[^/]+)/tar.gz/(.+)", auth=False)
        def codeload(request: Request) -> Reply:
            repo, ref = request.match[1], request.match[2]  # type: ignore[index]
            return Reply(200, raw=self.tarballs[(repo.lower(), ref)], headers={"Content-Type": "application/x-gzip"})

        @self.route("POST", r"/repos/([^/]+/[^/]+)/statuses/([0-9a-f]{40})")
        def status(request: Request) -> Reply:
            body = request.json
            problem = _check_status(body)
            if problem:
                return Reply(422, {"message": problem})
            return Reply(201, {"id": next(self._ids), **body})

        @self.route("POST", r"/repos/([^/]+/[^/]+)/check-runs")
        def create_check_run(request: Request) -> Reply:
            body = request.json
            problem = _check_check_run(body, create=True)
            if problem:
                return Reply(422, {"message": problem})
            run_id = next(self._ids)
            with self.lock:
                self.check_runs[run_id] = dict(body)
            return Reply(201, {"id": run_id, **body})

        @self.route("PATCH", r"/repos/([^/]+/[^/]+)/check-runs/(\d+)")
        def update_check_run(request: Request) -> Reply:
            run_id = int(request.match[2])  # type: ignore[index]
            if run_id not in self.check_runs:
                return Reply(404, {"message": "Not Found"})
            body = request.json
            problem = _check_check_run(body, create=False)
            if problem:
                return Reply(422, {"message": problem})
            with self.lock:
                self.check_runs[run_id].update(body)
            return Reply(200, {"id": run_id, **self.check_runs[run_id]})

        @self.route("POST", r"/repos/([^/]+/[^/]+)/deployments")
        def create_deployment(request: Request) -> Reply:
            body = request.json
            problem = _check_deployment(body)
            if problem:
                return Reply(422, {"message": problem})
            deployment_id = next(self._ids)
            with self.lock:
                self.deployments[deployment_id] = dict(body)
                self.deployment_statuses[deployment_id] = []
            return Reply(201, {"id": deployment_id, "sha": body["ref"], **body})

        @self.route("POST", r"/repos/([^/]+/[^/]+)/deployments/(\d+)/statuses")
        def create_deployment_status(request: Request) -> Reply:
            deployment_id = int(request.match[2])  # type: ignore[index]
            body = request.json
            states = ("error", "failure", "inactive", "in_progress", "queued", "pending", "success")
            if deployment_id not in self.deployments:
                return Reply(404, {"message": "Not Found"})
            if body.get("state") not in states or len(body.get("description") or "") > 140:
                return Reply(422, {"message": "invalid deployment status"})
            with self.lock:
                self.deployment_statuses[deployment_id].append(dict(body))
            return Reply(201, {"id": next(self._ids), **body})

        @self.route("GET", r"/repos/([^/]+/[^/]+)/issues/(\d+)/comments")
        def list_comments(request: Request) -> Reply:
            number = int(request.match[2])  # type: ignore[index]
            with self.lock:
                found = [c for c in self.comments.values() if c["issue"] == number]
            return Reply(200, found)

        @self.route("POST", r"/repos/([^/]+/[^/]+)/issues/(\d+)/comments")
        def create_comment(request: Request) -> Reply:
            body = request.json.get("body") or ""
            if len(body) > 65536:
                return Reply(422, {"message": "Body is too long (maximum is 65536 characters)"})
            comment_id = next(self._ids)
            number = int(request.match[2])  # type: ignore[index]
            comment = {
                "id": comment_id,
                "issue": number,
                "body": body,
                "user": {"login": self.bot_login, "type": "Bot"},
            }
            with self.lock:
                self.comments[comment_id] = comment
            return Reply(201, comment)

        @self.route("PATCH", r"/repos/([^/]+/[^/]+)/issues/comments/(\d+)")
        def update_comment(request: Request) -> Reply:
            comment_id = int(request.match[2])  # type: ignore[index]
            with self.lock:
                if comment_id not in self.comments:
                    return Reply(404, {"message": "Not Found"})
                self.comments[comment_id]["body"] = request.json["body"]
                return Reply(200, self.comments[comment_id])

        @self.route("POST", r"/repos/([^/]+/[^/]+)/issues/comments/(\d+)/reactions")
        def create_reaction(request: Request) -> Reply:
            comment_id = int(request.match[2])  # type: ignore[index]
            content = request.json.get("content")
            if content not in ("+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"):
                return Reply(422, {"message": "invalid reaction"})
            with self.lock:
                known = (comment_id, content) in self.reactions
                if not known:
                    self.reactions.append((comment_id, content))
            return Reply(200 if known else 201, {"id": next(self._ids), "content": content})

        @self.route("GET", r"/repos/([^/]+/[^/]+)/collaborators/([^/]+)/permission")
        def permission(request: Request) -> Reply:
            repo, user = request.match[1], request.match[2]  # type: ignore[index]
            level = self.permissions.get((repo.lower(), user.lower()))
            if level is None:
                return Reply(404, {"message": "Not Found"})
            return Reply(200, {"permission": level, "role_name": level, "user": {"login": user}})

        @self.route("GET", r"/repos/([^/]+/[^/]+)/commits/([0-9a-f]{40})")
        def commit(request: Request) -> Reply:
            sha = request.match[2]  # type: ignore[index]
            return Reply(200, {"sha": sha, "commit": {"message": self.commit_messages.get(sha, "A commit")}})

        @self.route("GET", r"/repos/([^/]+/[^/]+)/pulls/(\d+)")
        def pull(request: Request) -> Reply:
            number = int(request.match[2])  # type: ignore[index]
            if number not in self.pulls:
                return Reply(404, {"message": "Not Found"})
            return Reply(200, self.pulls[number])

        @self.route("GET", r"/repos/([^/]+/[^/]+)/pulls/(\d+)/commits")
        def pull_commits(request: Request) -> Reply:
            number = int(request.match[2])  # type: ignore[index]
            return Reply(200, [{"sha": sha} for sha in self.pull_commits.get(number, [])])

        @self.route("GET", r"/repos/([^/]+/[^/]+)/contents/(.+)")
        def contents(request: Request) -> Reply:
            import base64
            from urllib.parse import parse_qs

            ref = parse_qs(request.query).get("ref", [""])[0]
            text = self.files.get((ref, request.match[2]))  # type: ignore[index]
            if text is None:
                return Reply(404, {"message": "Not Found"})
            return Reply(
                200, {"type": "file", "encoding": "base64", "content": base64.b64encode(text.encode()).decode()}
            )

        @self.route("POST", r"/app-manifests/([^/]+)/conversions", auth=False)
        def manifest_conversion(request: Request) -> Reply:
            found = self.manifest_conversions.pop(request.match[1], None)  # type: ignore[index]
            if found is None:
                return Reply(404, {"message": "Not Found"})
            return Reply(201, found)


def _check_deployment(body: Any) -> str | None:
    if not isinstance(body, dict) or not body.get("ref"):
        return "ref is required"
    if body.get("auto_merge", True) or body.get("required_contexts") != []:
        return "409: a deploy service must not let GitHub merge or wait on its own pending status"
    return None


def _check_status(body: Any) -> str | None:
    if not isinstance(body, dict) or body.get("state") not in ("error", "failure", "pending", "success"):
        return "state must be error, failure, pending or success"
    if len(body.get("description") or "") > 140:
        return "description is too long (maximum is 140 characters)"
    return None


def _check_check_run(body: Any, *, create: bool) -> str | None:
    if not isinstance(body, dict):
        return "body must be an object"
    if create and (not body.get("name") or not re.fullmatch(r"[0-9a-f]{40}", body.get("head_sha", ""))):
        return "name and head_sha are required"
    status = body.get("status")
    if status not in (None, "queued", "in_progress", "completed"):
        return f"status {status!r} is not allowed for apps"
    conclusions = ("action_required", "cancelled", "failure", "neutral", "success", "skipped", "timed_out")
    if status == "completed" and body.get("conclusion") not in conclusions:
        return "conclusion is required when status is completed"
    output = body.get("output")
    if output is not None:
        if create and not output.get("title"):
            return "output.title is required"
        if not output.get("summary") or len(output["summary"]) > 65535 or len(output.get("text") or "") > 65535:
            return "output.summary is required and summary/text are at most 65535 characters"
    for action in body.get("actions") or []:
        if len(action["label"]) > 20 or len(action["description"]) > 40 or len(action["identifier"]) > 20:
            return "action label/description/identifier too long"
    if len(body.get("actions") or []) > 3:
        return "at most 3 actions"
    return None


def make_tarball(top: str, files: dict[str, str | bytes], *, source_dir: str | None = None) -> bytes:
    """A .tar.gz with every file under `top/`, plus a pax global header as GitHub sends."""
    buffer = io.BytesIO()
    with tarfile.open(
        fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT, pax_headers={"comment": "fake-commit-id"}
    ) as tar:
        directory = tarfile.TarInfo(top)
        directory.type = tarfile.DIRTYPE
        directory.mode = 0o755
        tar.addfile(directory)
        if source_dir is not None:
            tar.add(source_dir, arcname=top, recursive=True, filter=_skip_node_modules)
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _skip_node_modules(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if "/node_modules" in info.name or info.name.endswith("/dist"):
        return None
    return info
