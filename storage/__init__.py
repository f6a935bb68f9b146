"""Artifact and log storage: a local folder by default, any S3-compatible server with s3://."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from core.errors import StorageError

CHUNK_SIZE = 1024 * 1024


class Storage(Protocol):
    """Keys are relative slash-separated names such as `deployments/<id>/artifact.tar.gz`."""

    def put_file(self, key: str, source: Path) -> None: ...

    def get_file(self, key: str, destination: Path) -> None: ...

    def read_bytes(self, key: str) -> bytes: ...

    def iter_chunks(self, key: str) -> Iterator[bytes]: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def check(self) -> None: ...


def _safe_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise StorageError(f"invalid storage key {key!r}")
    return key


class LocalStorage:
    """Files under one root folder."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        return self.root / _safe_key(key)

    def put_file(self, key: str, source: Path) -> None:
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            shutil.copyfile(source, partial)
            partial.replace(target)
        except OSError as error:
            raise StorageError(f"cannot write {key} to {self.root}: {error.strerror}") from error

    def get_file(self, key: str, destination: Path) -> None:
        try:
            shutil.copyfile(self._path(key), destination)
        except OSError as error:
            raise StorageError(f"cannot read {key} from {self.root}: {error.strerror}") from error

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except OSError as error:
            raise StorageError(f"cannot read {key} from {self.root}: {error.strerror}") from error

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except OSError as error:
            raise StorageError(f"cannot read {key} from {self.root}: {error.strerror}") from error
        return _chunks(handle)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(f"storage folder {self.root} cannot be created: {error.strerror}") from error


def _chunks(handle) -> Iterator[bytes]:  # type: ignore[no-untyped-def]
    with handle:
        while chunk := handle.read(CHUNK_SIZE):
            yield chunk


def _transfer_errors() -> tuple[type[Exception], ...]:
    """What boto3's upload_file/download_file raise: botocore's errors and boto3's own
    (S3UploadFailedError, RetriesExceededError), which are not botocore errors."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError, Boto3Error)


class S3Storage:
    """Objects in one bucket under a prefix, through boto3 (any S3-compatible server)."""

    def __init__(self, bucket: str, prefix: str, *, endpoint_url: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
                s3={"addressing_style": "path"},
            ),
        )

    def _key(self, key: str) -> str:
        key = _safe_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, action: str, key: str, error: Exception) -> StorageError:
        return StorageError(f"cannot {action} s3://{self.bucket}/{self._key(key)}: {error}")

    def put_file(self, key: str, source: Path) -> None:
        try:
            self.client.upload_file(str(source), self.bucket, self._key(key))
        except _transfer_errors() as error:
            raise self._fail("write", key, error) from error

    def get_file(self, key: str, destination: Path) -> None:
        try:
            self.client.download_file(self.bucket, self._key(key), str(destination))
        except _transfer_errors() as error:
            raise self._fail("read", key, error) from error

    def read_bytes(self, key: str) -> bytes:
        return b"".join(self.iter_chunks(key))

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except (BotoCoreError, ClientError) as error:
            raise self._fail("read", key, error) from error
        return body.iter_chunks(CHUNK_SIZE)  # type: ignore[no-any-return,unused-ignore]

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._fail("look up", key, error) from error
        except BotoCoreError as error:
            raise self._fail("look up", key, error) from error
        return True

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as error:
            raise self._fail("delete", key, error) from error

    def check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as error:
            raise StorageError(f"bucket {self.bucket!r} cannot be reached: {error}") from error


def open_storage(url: str, *, s3_endpoint_url: str | None = None) -> Storage:
    """Storage for STORAGE_URL: a path, file:///abs/path, or s3://bucket/prefix."""
    if url.startswith("s3://"):
        parsed = urlparse(url)
        return S3Storage(parsed.netloc, parsed.path, endpoint_url=s3_endpoint_url)
    if url.startswith("file://"):
        return LocalStorage(Path(urlparse(url).path))
    return LocalStorage(Path(url))
