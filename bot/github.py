"""The GitHub API client: App JWT, cached installation tokens, and the calls the service makes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from githubkit import AppInstallationAuthStrategy, GitHub
from githubkit.cache import MemCacheStrategy
from githubkit.exception import GitHubException, RequestFailed
from githubkit.response import Response

from core.errors import GitHubError
from core.settings import Settings

T = TypeVar("T")
API_VERSION = "2022-11-28"
HEADERS = {"X-GitHub-Api-Version": API_VERSION}
REQUEST_TIMEOUT = 30.0
# https://docs.github.com/en/rest/commits/statuses#create-a-commit-status (observed: 140 chars)
STATUS_DESCRIPTION_LIMIT = 140
# https://docs.github.com/en/rest/checks/runs#create-a-check-run (summary and text: 65535 chars)
CHECK_OUTPUT_LIMIT = 65535


def decipher(error: GitHubException) -> GitHubError:
    """Turn a githubkit failure into the service's GitHubError, keeping GitHub's message."""
    # A failure inside the auth flow (the token exchange) arrives wrapped in a RequestError.
    while not isinstance(error, RequestFailed) and isinstance(error.__cause__, GitHubException):
        error = error.__cause__
    if isinstance(error, RequestFailed):
        response = error.response
        message = ""
        try:
            body = response.json()
            message = body.get("message", "") if isinstance(body, dict) else ""
        except ValueError:
            pass
        request = response.raw_request
        return GitHubError(
            f"GitHub answered {response.status_code} to {request.method} {request.url.path}"
            + (f": {message}" if message else ""),
            status_code=response.status_code,
        )
    return GitHubError(f"GitHub cannot be reached: {error}")


def _base_url(api_url: str) -> str:
    # githubkit joins paths onto the base; a trailing slash keeps /api/v3 of GitHub Enterprise.
    return api_url.rstrip("/") + "/"


class GitHubApp:
    """The App itself: makes clients for its installations and caches their tokens."""

    def __init__(self, settings: Settings) -> None:
        if not settings.github_app_id or not settings.github_private_key:
            raise GitHubError("the GitHub App is not configured (GITHUB_APP_ID, GITHUB_PRIVATE_KEY)")
        self.app_id = settings.github_app_id
        self.private_key = settings.github_private_key
        self.base_url = _base_url(settings.github_api_url)
        # Tokens live in this cache until a minute before they expire (githubkit's rule).
        self._cache = MemCacheStrategy()
        self._clients: dict[int, Installation] = {}
        self._lock = threading.Lock()
        # githubkit opens a new httpx client for each call; handing it one TLS context saves
        # loading the CA bundle (tens of milliseconds) every time.
        self._ssl_context = httpx.create_ssl_context(trust_env=False)

    def _github(self, auth: Any) -> GitHub[Any]:
        return GitHub(
            auth,
            base_url=self.base_url,
            timeout=REQUEST_TIMEOUT,
            cache_strategy=self._cache,
            http_cache=False,
            auto_retry=False,
            trust_env=False,
            ssl_verify=self._ssl_context,
        )

    def installation(self, installation_id: int) -> Installation:
        with self._lock:
            client = self._clients.get(installation_id)
            if client is None:
                auth = AppInstallationAuthStrategy(self.app_id, self.private_key, installation_id)
                client = Installation(self._github(auth), installation_id)
                self._clients[installation_id] = client
            return client


class Installation:
    """Calls made with one installation's token."""

    def __init__(self, github: GitHub[Any], installation_id: int) -> None:
        self.github = github
        self.installation_id = installation_id

    def _call(self, request: Callable[[], Response[Any, Any]]) -> Any:
        try:
            response = request()
        except GitHubException as error:
            raise decipher(error) from error
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def request(self, method: str, path: str, *, json: Any = None) -> Any:
        return self._call(lambda: self.github.request(method, path, json=json, headers=HEADERS))

    def create_status(
        self, repo: str, sha: str, *, state: str, description: str, target_url: str, context: str
    ) -> None:
        self.request(
            "POST",
            f"/repos/{repo}/statuses/{sha}",
            json={
                "state": state,
                "description": description[:STATUS_DESCRIPTION_LIMIT],
                "target_url": target_url,
                "context": context,
            },
        )

    def create_check_run(self, repo: str, body: dict[str, Any]) -> int:
        data = self.request("POST", f"/repos/{repo}/check-runs", json=body)
        return int(data["id"])

    def update_check_run(self, repo: str, check_run_id: int, body: dict[str, Any]) -> None:
        self.request("PATCH", f"/repos/{repo}/check-runs/{check_run_id}", json=body)

    def download_tarball(self, repo: str, ref: str, destination: Path) -> None:
        """GET /repos/{repo}/tarball/{ref}, following GitHub's redirect to the archive."""
        try:
            with (
                self.github.get_sync_client() as client,
                client.stream("GET", f"repos/{repo}/tarball/{ref}", headers=HEADERS) as response,
            ):
                if response.status_code >= 400:
                    response.read()
                    raise GitHubError(
                        f"GitHub answered {response.status_code} to the source download of {repo}@{ref}",
                        status_code=response.status_code,
                    )
                with destination.open("wb") as handle:
                    for chunk in response.iter_bytes():
                        handle.write(chunk)
        except GitHubException as error:
            raise decipher(error) from error
        except httpx.HTTPError as error:
            raise GitHubError(f"the source download of {repo}@{ref} failed: {error}") from error
        except OSError as error:
            raise GitHubError(f"the source download of {repo}@{ref} failed: {error}") from error

    # -- GitHub Deployments (https://docs.github.com/en/rest/deployments) ----------------
    def create_deployment(self, repo: str, body: dict[str, Any]) -> int | None:
        """The new deployment's id; None when GitHub answered 202 (it merged instead)."""
        data = self.request("POST", f"/repos/{repo}/deployments", json=body)
        return int(data["id"]) if isinstance(data, dict) and "id" in data else None

    def create_deployment_status(self, repo: str, deployment_id: int, body: dict[str, Any]) -> None:
        self.request("POST", f"/repos/{repo}/deployments/{deployment_id}/statuses", json=body)

    # -- comments and reactions (https://docs.github.com/en/rest/issues/comments) ---------
    def list_comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        comments: list[dict[str, Any]] = []
        page = 1
        while True:
            batch = self.request("GET", f"/repos/{repo}/issues/{number}/comments?per_page=100&page={page}")
            if not batch:
                return comments
            comments.extend(batch)
            if len(batch) < 100:
                return comments
            page += 1

    def create_comment(self, repo: str, number: int, body: str) -> int:
        data = self.request("POST", f"/repos/{repo}/issues/{number}/comments", json={"body": body})
        return int(data["id"])

    def update_comment(self, repo: str, comment_id: int, body: str) -> None:
        self.request("PATCH", f"/repos/{repo}/issues/comments/{comment_id}", json={"body": body})

    def create_reaction(self, repo: str, comment_id: int, content: str) -> None:
        self.request("POST", f"/repos/{repo}/issues/comments/{comment_id}/reactions", json={"content": content})

    def get_permission(self, repo: str, username: str) -> str:
        data = self.request("GET", f"/repos/{repo}/collaborators/{username}/permission")
        return str((data or {}).get("permission") or "none")

    def get_commit(self, repo: str, sha: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/repos/{repo}/commits/{sha}") or {})

    def get_pull_request(self, repo: str, number: int) -> dict[str, Any]:
        return dict(self.request("GET", f"/repos/{repo}/pulls/{number}") or {})

    def list_pull_commits(self, repo: str, number: int) -> list[str]:
        """The SHAs of a pull request's commits (GitHub lists up to 250)."""
        data = self.request("GET", f"/repos/{repo}/pulls/{number}/commits?per_page=100") or []
        return [str(item.get("sha", "")) for item in data]

    def get_file_text(self, repo: str, path: str, ref: str) -> str | None:
        """A file's text at ref, None when it does not exist there."""
        import base64

        try:
            data = self.request("GET", f"/repos/{repo}/contents/{path}?ref={ref}")
        except GitHubError as error:
            if error.status_code == 404:
                return None
            raise
        if not isinstance(data, dict) or data.get("type") != "file":
            return None
        return base64.b64decode(data.get("content") or "").decode("utf-8", errors="replace")
