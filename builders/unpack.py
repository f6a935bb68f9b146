"""Safe unpacking of source archives: nothing may land outside the work directory."""

from __future__ import annotations

import tarfile
from pathlib import Path

from core.errors import UnsafeArchive

MAX_UNPACKED_BYTES = 4 * 1024**3
MAX_MEMBERS = 200_000


def unpack_source(archive: Path, destination: Path) -> None:
    """Unpack a GitHub tarball into destination, dropping its single top-level folder.

    Refuses (UnsafeArchive) absolute paths, `..`, links that point out, devices and
    FIFOs, and archives over MAX_UNPACKED_BYTES or MAX_MEMBERS.
    """
    destination.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            prefix = _common_prefix(members)
            _check_sizes(members)
            for member in members:
                _check_member(member, prefix)
            tar.extractall(destination, members=_stripped(members, prefix), filter=_strict_filter)
    except tarfile.FilterError as error:
        raise UnsafeArchive(f"unsafe source archive: {error}") from None
    except tarfile.TarError as error:
        raise UnsafeArchive(f"the source archive cannot be read: {error}") from None


def _common_prefix(members: list[tarfile.TarInfo]) -> str:
    firsts = {member.name.split("/", 1)[0] for member in members}
    if len(firsts) == 1 and any("/" in member.name for member in members):
        return firsts.pop() + "/"
    return ""


def _check_sizes(members: list[tarfile.TarInfo]) -> None:
    if len(members) > MAX_MEMBERS:
        raise UnsafeArchive(f"unsafe source archive: more than {MAX_MEMBERS} entries")
    if sum(member.size for member in members if member.isfile()) > MAX_UNPACKED_BYTES:
        raise UnsafeArchive(f"unsafe source archive: more than {MAX_UNPACKED_BYTES} bytes unpacked")


def _check_member(member: tarfile.TarInfo, prefix: str) -> None:
    name = member.name
    parts = name.split("/")
    if name.startswith("/") or ".." in parts:
        raise UnsafeArchive(f"unsafe source archive: entry {name!r} points outside the source folder")
    if member.isdev() or member.isfifo():
        raise UnsafeArchive(f"unsafe source archive: entry {name!r} is a device or FIFO")
    if prefix and not name.startswith(prefix) and name != prefix.rstrip("/"):
        raise UnsafeArchive(f"unsafe source archive: entry {name!r} is outside {prefix!r}")


def _stripped(members: list[tarfile.TarInfo], prefix: str) -> list[tarfile.TarInfo]:
    kept = []
    for member in members:
        name = member.name.removeprefix(prefix)
        if not name or name == prefix.rstrip("/"):
            continue
        changes: dict[str, str] = {"name": name}
        if member.islnk():
            changes["linkname"] = member.linkname.removeprefix(prefix)
        kept.append(member.replace(**changes, deep=False))  # type: ignore[arg-type]
    return kept


def _strict_filter(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
    # The "data" filter refuses absolute and escaping names and links, and devices.
    return tarfile.data_filter(member, path)


def pack_folder(folder: Path, archive: Path) -> None:
    """Pack the contents of folder (not the folder itself) into a tar.gz."""
    with tarfile.open(archive, "w:gz", compresslevel=6) as tar:
        for child in sorted(folder.iterdir()):
            tar.add(child, arcname=child.name)


def unpack_artifact(archive: Path, destination: Path) -> None:
    """Unpack a stored artifact for serving, with the same rules as the source."""
    destination.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(destination, filter=_strict_filter)
    except (tarfile.FilterError, tarfile.TarError) as error:
        raise UnsafeArchive(f"artifact cannot be unpacked: {error}") from None
