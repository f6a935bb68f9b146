"""Pure decisions on recorded payloads: what a push asks for, and the repository it is about."""

from __future__ import annotations

from bot.plan import plan_push, repo_ref
from builders.config import parse_config
from core.ids import looks_like_id, new_id
from tests.payloads import branch_deleted_payload, load, push_payload, sha_for


def test_push_to_a_branch_builds_its_head() -> None:
    sha = sha_for("p")
    plan = plan_push(push_payload(sha, branch="feature/login", message="Add login"))
    assert plan.build and plan.sha == sha and plan.branch == "feature/login" and plan.message == "Add login"


def test_branch_creation_example_builds() -> None:
    payload = load("push.branch-created")
    plan = plan_push(payload)
    assert plan.build and plan.sha == payload["after"] and plan.branch == "master"


def test_tag_and_deletion_pushes_do_not_build() -> None:
    assert not plan_push(load("push.tag-deleted")).build
    assert plan_push(branch_deleted_payload()).reason == "branch deleted"
    tag = push_payload(sha_for("t"))
    tag["ref"] = "refs/tags/v1"
    assert not plan_push(tag).build


def test_repo_ref_from_example() -> None:
    ref = repo_ref(load("push.branch-created"))
    assert ref is not None
    assert (ref.owner, ref.name, ref.installation_id, ref.github_id) == ("Codertocat", "Hello-World", 1, 186853002)
    assert repo_ref({"repository": None}) is None


def test_ids_are_host_labels_with_128_random_bits() -> None:
    ids = {new_id() for _ in range(2000)}
    assert len(ids) == 2000
    for value in ids:
        assert looks_like_id(value) and len(value) <= 63 and value == value.lower() and value.isalnum()


def test_config_commands_split_like_a_shell() -> None:
    config = parse_config("build_command: npm run build -- --base '/my site/'\ninstall_command: [npm, ci]\n")
    assert config.build_command == ("npm", "run", "build", "--", "--base", "/my site/")
    assert config.install_command == ("npm", "ci")
    assert parse_config(None).root == "."
    assert parse_config("").output_dir is None


def test_config_errors_name_the_key() -> None:
    import pytest

    from core.errors import ConfigError

    for text, message in [
        ("timeout: -1", "timeout must be a whole number"),
        ("root: /etc", "root must be a path inside"),
        ("colour: blue", "unknown keys: colour"),
        ("- a\n- b", "must be a mapping"),
        ('build_command: "echo \'unterminated"', "cannot be split"),
        ("builder: heroku", "builder must be one of static, docker"),
        ("build_command: ''", "build_command is empty"),
        ("a: [", "not valid YAML"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_config(text)
