"""Preview host names (pure) and aliases that only move forward."""

from __future__ import annotations

from datetime import timedelta

from bot.comments import CommentView, render
from core.aliases import MAX_LABEL, branch_alias, pr_alias, production_alias, slug
from core.timeutil import utcnow
from models import Alias, Deployment, DeploymentStatus, Project
from tasks.previews import move_aliases
from tests.conftest import Service

LABEL_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-")


def _valid(label: str) -> bool:
    return 0 < len(label) <= MAX_LABEL and set(label) <= LABEL_CHARS and label[0] != "-" and label[-1] != "-"


def test_documented_alias_shapes() -> None:
    assert pr_alias("Codertocat", "Hello-World", 7) == "pr-7--codertocat-hello-world"
    assert branch_alias("Codertocat", "Hello-World", "main") == "main--codertocat-hello-world"
    assert production_alias("Codertocat", "Hello-World") == "codertocat-hello-world"


def test_branch_slugs_are_distinct_stable_labels() -> None:
    branches = [
        "feature/login",
        "feature-login",
        "Feature/Login",
        "release/1.2.3",
        "release-1-2-3",
        "ünïcödé/ブランチ",
        "a" * 200,
        "a" * 199 + "b",
        "--weird--",
        "UPPER",
        "upper",
    ]
    labels = [branch_alias("octo", "site", branch) for branch in branches]
    assert all(_valid(label) for label in labels), labels
    assert len(set(labels)) == len(labels)
    assert labels == [branch_alias("octo", "site", branch) for branch in branches]
    assert slug("feature-login") == "feature-login"


def test_long_owner_and_repo_still_fit() -> None:
    label = pr_alias("o" * 39, "r" * 100, 123456)
    assert _valid(label) and label.startswith("pr-123456--")


def _deployment(project: Project, sha: str, created_offset: float) -> Deployment:
    return Deployment.create(
        project=project,
        commit_sha=sha * 40,
        branch="main",
        status=DeploymentStatus.READY.value,
        lane="branch:main",
        created_at=utcnow() + timedelta(seconds=created_offset),
    )


def test_an_older_deployment_finishing_late_never_takes_the_alias_back(service: Service) -> None:
    project = Project.create(
        owner_id="Codertocat",
        name="Hello-World",
        github_url="https://github.com/x",
        github_repo_id=1,
        default_branch="main",
    )
    older = _deployment(project, "a", 0)
    newer = _deployment(project, "b", 1)
    assert move_aliases(newer)
    assert move_aliases(older) == []
    for alias in Alias.select():
        assert alias.deployment_id == newer.id
    newest = _deployment(project, "c", 2)
    assert set(move_aliases(newest)) == {"main--codertocat-hello-world", "codertocat-hello-world"}


def test_comment_render_is_stable_and_names_the_state() -> None:
    view = CommentView(
        project="Codertocat/Hello-World",
        number=2,
        state="failed",
        preview_url="http://c1.localhost/",
        details_url="http://localhost/deployments/c1",
        commit="abc1234",
        updated="2026-12-03 10:00:00",
        reason="`npm run build` exited with code 1",
    )
    body = render(view)
    assert body == render(view)
    assert "❌ Failed" in body and "exited with code 1" in body and "Visit preview" not in body
