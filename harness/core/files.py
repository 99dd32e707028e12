"""Files that readers never see half-written: atomic writes, the temp files killed writers
leave, and the folder names runs and sweeps may take."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

_UMASK = os.umask(0o022)
os.umask(_UMASK)

# Sweep names and run ids become one folder name under results/ or runs/. A leading letter or
# digit keeps out ".", "..", hidden names (loaders skip those) and names read as CLI options.
_FOLDER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
FOLDER_NAME_RULE = ("1-128 letters, digits, '.', '_' or '-', starting with a letter or digit "
                    "(a single folder name: no '/', no '..', not an absolute path)")


def folder_name_problem(value: object) -> str | None:
    """Why `value` cannot name a folder directly under a root (None when it can).

    Callers raise their own error type, naming file, field and value, followed by this text.
    """
    if isinstance(value, str) and _FOLDER_NAME_RE.fullmatch(value):
        return None
    return f"must be {FOLDER_NAME_RULE}"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a hidden temp file in the same folder, fsync, then rename.

    Readers never see a partial file: pyarrow and our loaders skip names starting with '.'.
    A failed write (disk full, read-only folder) leaves nothing and raises an OSError naming
    `path` and the cause. The temp file (.<name>.<random>.tmp) is locked until it is renamed, so
    `remove_stale_temp_files` never takes a write in progress for one a killed writer left.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX,
                                        dir=path.parent)
    except OSError as e:
        raise _write_error(path, e) from e
    try:
        with os.fdopen(fd, "wb") as f:
            with contextlib.suppress(OSError):  # a file system without locks: age alone protects
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file normal permissions
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp_name, path)  # before close, which drops the lock
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(e, OSError):
            raise _write_error(path, e) from e
        raise


TEMP_SUFFIX = ".tmp"
TEMP_MAX_AGE_S = 3600.0  # default age after which an unlocked temp file counts as abandoned
_TEMP_RE = re.compile(r"\..+\.tmp")  # .<name>.<random>.tmp of atomic_write_bytes


def remove_stale_temp_files(folders: Iterable[Path], *, max_age_s: float = TEMP_MAX_AGE_S,
                            now: float | None = None) -> list[Path]:
    """Delete temp files that killed writers left in `folders` (not their sub-folders).

    A file goes only if its name is a temp name of `atomic_write_bytes`, it is a regular file
    (not a link), it was last modified more than `max_age_s` seconds ago, and no process holds
    its lock: a live writer holds it from creation to rename. Where the file system has no locks,
    the age alone decides; a live writer modifies its file within seconds. Missing folders and
    files that cannot be removed (another user's) are skipped. Returns what was removed.
    """
    now = time.time() if now is None else now
    removed = []
    for folder in folders:
        try:
            entries = [e for e in os.scandir(folder) if _TEMP_RE.fullmatch(e.name)]
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            path = Path(entry.path)
            if entry.is_file(follow_symlinks=False) and _remove_if_abandoned(path, max_age_s, now):
                removed.append(path)
    return removed


def _remove_if_abandoned(path: Path, max_age_s: float, now: float) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # renamed by its writer meanwhile, a link, or not ours to read
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its writer is alive
        except OSError:
            pass  # no locks on this file system
        st = os.fstat(fd)
        if now - st.st_mtime < max_age_s:
            return False
        try:
            current = os.lstat(path)
        except FileNotFoundError:
            return False
        if (current.st_dev, current.st_ino) != (st.st_dev, st.st_ino):
            return False  # the name now belongs to another file: leave it
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _write_error(path: Path, e: OSError) -> OSError:
    # os.write and fsync errors carry no file name ("[Errno 28] No space left on device").
    if e.errno is None:
        return OSError(f"cannot write {path}: {e}")
    return OSError(e.errno, f"cannot write {path}: {e.strerror or e}")


def atomic_write_text(path: Path, text: str) -> None:
    """Text version of `atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode())
