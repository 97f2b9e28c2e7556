"""Writing files so that a reader never sees half of one, and locking folders against a second
writer.

Every file emomatch writes for a user (store metadata, manifests, configs, metrics) goes through
:func:`atomic_write_text` / :func:`atomic_write_bytes` / :func:`atomic_path`: the content is written
to a temporary file in the same folder, flushed to disk and renamed over the target, so an
interrupted or failed write leaves the old file (or none), never a truncated one. The final file
gets the mode an ordinary ``open()`` would give it (0666 minus the umask), not the 0600 of
``tempfile.mkstemp``: stores and runs are shared between colleagues.

:func:`hold_lock` takes an exclusive OS lock (``flock``) on ``<folder>/.lock`` for as long as a
command writes into the folder; a second process gets :class:`~emomatch.errors.LockedError` at
once instead of interleaving its writes. The OS drops the lock when the process ends, however it
ends, so a crashed writer never blocks the next one; the lock file itself stays behind harmlessly.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from emomatch.errors import LockedError, WriteError

LOCK_FILE = ".lock"
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}

log = logging.getLogger(__name__)


def _umask() -> int:
    # os.umask can only be read by setting it, which races with other threads creating files;
    # Linux shows it in /proc without side effects.
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: 0666 minus the umask."""
    return 0o666 & ~_umask()


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def describe_os_error(exc: OSError) -> str:
    """A short reason with a hint for the write failures a user can fix."""
    code = exc.errno
    reason = exc.strerror or str(exc)
    # pyarrow's errors bury the cause in their text: "Error writing bytes ... [errno 28] ...".
    found = re.search(r"\[errno (\d+)\]", str(exc))
    if found:
        code = int(found.group(1))
        reason = os.strerror(code)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"{reason} (free some space and run the command again)"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{reason} (choose a folder you can write to)"
    return reason


@contextmanager
def atomic_path(path: str | Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block ends without an exception the
    file written there is flushed to disk, given ``mode`` (default: :func:`default_file_mode`)
    and renamed to ``path``. On an exception the temporary file is removed and ``path`` is left
    as it was."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, default_file_mode() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, mode) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def atomic_write_text(
    path: str | Path, text: str, encoding: str = "utf-8", mode: int | None = None
) -> None:
    """Replace ``path`` with ``text`` atomically (see :func:`atomic_path`)."""
    atomic_write_bytes(path, text.encode(encoding), mode)


# Locks this process holds, by lock file: a nested hold_lock on the same folder (a command that
# locks its --out, then a writer inside it that locks the same folder) shares the outer lock
# rather than failing against itself.
_held: dict[Path, tuple[int, int]] = {}
_held_guard = threading.Lock()


def _holder_pid(lock_file: Path) -> str:
    try:
        text = lock_file.read_text().strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


@contextmanager
def hold_lock(path: str | Path, what: str) -> Iterator[Path]:
    """Hold an exclusive lock on the folder ``path`` (created if needed) for the block.

    ``what`` names the folder in the error, e.g. ``"store"`` or ``"run folder"``. Raises
    :class:`LockedError` at once if another process holds it, :class:`WriteError` if the folder
    or its lock file cannot be created. Re-entrant within one process.
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        key = (folder / LOCK_FILE).resolve()
    except OSError as exc:
        raise WriteError(f"cannot create {what} {folder}: {describe_os_error(exc)}") from None
    with _held_guard:
        if key in _held:
            fd, count = _held[key]
            _held[key] = (fd, count + 1)
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield folder
        finally:
            with _held_guard:
                fd, count = _held[key]
                _held[key] = (fd, count - 1)
        return
    try:
        fd = os.open(key, os.O_RDWR | os.O_CREAT, default_file_mode())
    except OSError as exc:
        raise WriteError(f"cannot write into {what} {folder}: {describe_os_error(exc)}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in _NO_LOCKS:
            # Some network and FUSE file systems have no locks at all: refusing to write there
            # would make emomatch unusable on them, so the run goes on, unguarded, and says so.
            log.warning(
                "%s %s is on a file system without file locks (%s): another emomatch "
                "process writing it at the same time would not be stopped",
                what,
                folder,
                exc.strerror,
            )
        else:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise WriteError(f"cannot lock {what} {folder}: {describe_os_error(exc)}") from None
            pid = _holder_pid(key)
            by = f" (pid {pid})" if pid else ""
            raise LockedError(
                f"{what} {folder} is being written by another emomatch process{by}; "
                "wait for it to finish or use another --out"
            ) from None
    try:
        # The pid is only a hint for the message above; the lock is the flock itself.
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        pass
    with _held_guard:
        _held[key] = (fd, 1)
    try:
        yield folder
    finally:
        with _held_guard:
            fd, count = _held[key]
            if count <= 1:
                del _held[key]
                os.close(fd)  # closing the only descriptor releases the flock
            else:
                _held[key] = (fd, count - 1)


def lock_holder(path: str | Path) -> int | None:
    """The pid holding :func:`hold_lock` on the folder ``path``, or None if none does (or it
    cannot be told). Reads /proc/locks rather than trying the lock: a probe could make a writer
    starting at that instant fail."""
    try:
        st = os.stat(Path(path) / LOCK_FILE)
        with open("/proc/locks") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 00:2f:5678 0 EOF"; waiting requests carry "->".
        if len(fields) >= 6 and fields[1] == "FLOCK" and "->" not in line and fields[5] == dev:
            return int(fields[4]) if fields[4].isdigit() else None
    return None
