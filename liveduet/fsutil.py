"""The one atomic file writer: `path` holds either the old content or the complete new one.

A temp file beside the target, fsync, rename, fsync of the folder (makes the rename durable). The
new file gets the permissions a plain `open(path, "w")` would give it (0666 less the umask), or the
old file's when it replaces one: mkstemp's private 0600 must not leak into what users share.
A file another program wrote beside the target (fluidsynth's WAV) goes in place through `install`,
with the same rule for its mode.

`check_output_file` says in one line why a path cannot be written, before any work is done.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from liveduet.errors import OutputPathError


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def target_mode(path: Path) -> int:
    """The mode `path` should have once written: the old file's, else 0666 less the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~current_umask()


def write_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically (overwriting); the folder must exist."""
    path = Path(path)
    mode = target_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def install(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Move the finished file `tmp` (same folder) onto `path` atomically, with `write_atomic`'s mode
    rule and durability. `tmp` is removed whatever happens."""
    tmp, path = Path(tmp), Path(path)
    try:
        mode = target_mode(path)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path


def fsync_dir(folder: Path) -> None:
    # Not every filesystem allows opening a directory.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_output_file(path: str | os.PathLike[str], what: str = "output", force: bool = True) -> Path:
    """Refuse, with one line (`OutputPathError`), a file path that cannot be written: its folder is
    missing or not a folder or not writable (a read-only mount too), or it is itself a folder, or it
    exists and `force` is False. Nothing is created."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"cannot write {what} {path}: it is a folder, not a file")
    if path.exists() and not force:
        raise OutputPathError(f"{path} exists (use --force to overwrite)")
    folder = path.parent
    if not folder.exists():
        raise OutputPathError(f"cannot write {what} {path}: folder {folder} does not exist")
    if not folder.is_dir():
        raise OutputPathError(f"cannot write {what} {path}: {folder} is not a folder")
    _check_writable(folder, f"folder {folder}", what, path)
    return path


def _check_writable(folder: Path, named: str, what: str, path: Path) -> None:
    # access() answers EROFS for a read-only mount even for root (who passes every mode check).
    if not os.access(folder, os.W_OK | os.X_OK):
        why = "read-only file system" if _read_only(folder) else "permission denied"
        raise OutputPathError(f"cannot write {what} {path}: {named} is not writable ({why})")


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def os_error_line(err: OSError) -> str:
    """An OSError in words, without the errno number: "No space left on device"."""
    return err.strerror or str(err) or type(err).__name__


def disk_full(err: OSError) -> bool:
    return err.errno in (errno.ENOSPC, errno.EDQUOT)


def check_output_folder(path: str | os.PathLike[str], what: str = "output") -> Path:
    """Like `check_output_file`, for a folder that will be created (with its parents) or filled:
    refuse a file in its place and an unwritable place (the nearest existing folder decides)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"cannot write {what} {path}: it is a file, not a folder")
    existing = path if path.exists() else next((p for p in path.parents if p.exists()), Path("."))
    if not existing.is_dir():
        raise OutputPathError(f"cannot write {what} {path}: {existing} is not a folder")
    _check_writable(existing, str(existing), what, path)
    return path
