"""The files around a published warehouse snapshot, without DuckDB: the writer lock and who
holds it, the writers' staging files and whose they are, the published file's owner, group and
mode, and a disk that fills up.

* The writer lock ``<db>.lock`` is an OS lock (``flock``): it is released when its holder ends,
  however it ends, so the lock file never needs deleting (deleting it lets a second writer in
  beside a live one). The holder writes who it is (pid, host, command, since when) into the
  sidecar ``<db>.lock.holder``, so a writer that waits, and the error of one that gives up, can
  say who holds it.
* A staging file is named after its writer: ``.<db>.staging-pid<PID>@<HOST>-<random>`` (and
  DuckDB's ``.wal`` beside it). Only the staging files of a process that is no longer alive on
  this host are removed as left over; a live writer's never are (nor any written from another
  host, whose processes cannot be checked from here).
* A publish is an ``os.replace`` of a new file, which would give the warehouse the writer's
  owner, group and mode: the published file's are copied onto the new file first
  (:func:`keep_attributes`), so analysts who read through the group keep their access.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import json
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout

__all__ = [
    "DiskFull",
    "LockHolder",
    "WarehouseBusy",
    "acquire_writer_lock",
    "disk_full_error",
    "free_mb",
    "holder_path",
    "is_disk_full",
    "keep_attributes",
    "lock_path",
    "new_staging_file",
    "pid_alive",
    "remove_stale_staging",
    "remove_staging_path",
    "staging_owner",
    "staging_prefix",
]

Notice = Callable[[str], None]


class WarehouseBusy(RuntimeError):
    """Another process holds the writer lock for too long."""


class DiskFull(OSError):
    """The disk filled up while a writer copied or wrote its staging file; nothing was published
    and the staging file is gone. One line: the path, the space left, what happened."""


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def holder_path(path: Path) -> Path:
    """The lock's sidecar: who holds the writer lock (JSON)."""
    return path.with_name(path.name + ".lock.holder")


def staging_prefix(path: Path) -> str:
    return f".{path.name}.staging-"


def _host() -> str:
    return socket.gethostname() or "localhost"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a process of another user counts; a zombie, a
    process that has ended but is not yet reaped by its parent, does not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:  # Linux: the state is the field after the parenthesised command name
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


# ---------------------------------------------------------------------------
# Who holds the writer lock
# ---------------------------------------------------------------------------

def _command() -> str:
    """This process's command line, short: ``ketaoutcomes ingest /exports/x --db w.duckdb``."""
    argv = list(sys.argv) or ["python"]
    first = argv[0]
    if first.endswith(os.path.join("ketaoutcomes", "__main__.py")) or Path(first).name == "ketaoutcomes":
        words = ["ketaoutcomes", *argv[1:]]
    elif first == "-c":
        words = ["python -c ..."]
    else:
        words = [Path(first).name or "python", *argv[1:]]
    text = " ".join(words)
    return text if len(text) <= 100 else text[:97] + "..."


@dataclasses.dataclass(frozen=True)
class LockHolder:
    """Who holds a warehouse's writer lock, as its holder wrote it into the lock's sidecar."""

    pid: int
    host: str
    command: str
    #: When it took the lock (UTC, to the second).
    since: dt.datetime

    @classmethod
    def this_process(cls) -> LockHolder:
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
        return cls(os.getpid(), _host(), _command(), now)

    def to_json(self) -> str:
        return json.dumps({"pid": self.pid, "host": self.host, "command": self.command,
                           "since": self.since.isoformat()}, sort_keys=True)

    @classmethod
    def read(cls, sidecar: Path) -> LockHolder | None:
        """The holder recorded in ``sidecar``, or None (no file, or not one this code wrote)."""
        try:
            data = json.loads(Path(sidecar).read_text())
            return cls(int(data["pid"]), str(data["host"]), str(data["command"]),
                       dt.datetime.fromisoformat(data["since"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, sidecar: Path) -> None:
        """Write atomically (a reader never sees half a record)."""
        fd, tmp = tempfile.mkstemp(prefix=f".{Path(sidecar).name}-", dir=Path(sidecar).parent)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(self.to_json() + "\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, sidecar)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def describe(self, *, date: bool = False) -> str:
        """``pid 123 on host h (ketaoutcomes ingest /x, since 02:00 UTC)``."""
        when = self.since.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M")
        return f"pid {self.pid} on host {self.host} ({self.command}, since {when} UTC)"


def _holder_text(path: Path, *, date: bool) -> str:
    holder = LockHolder.read(holder_path(path))
    if holder is None:
        return "a process that left no record of itself (another program, or an earlier ketaoutcomes that did not record itself)"
    if holder.host == _host() and not pid_alive(holder.pid):
        return (f"a process that left no record of itself (the record names {holder.describe(date=date)}, "
                "which has ended)")
    return holder.describe(date=date)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def acquire_writer_lock(path: Path, timeout: float, *, notice: Notice | None = None) -> FileLock:
    """Take the writer lock of warehouse ``path`` (waiting up to ``timeout`` s) and record this
    process as its holder. A writer that has to wait says so first, in one line through
    ``notice`` (default: stderr): whose lock it waits for.

    Raises
    ------
    WarehouseBusy
        Still held after ``timeout`` s: one line naming the holder and what to do.
    """
    path = Path(path)
    lock = FileLock(str(lock_path(path)), timeout=timeout)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        (notice or _say)(f"waiting for the writer lock of {path} held by {_holder_text(path, date=False)}")
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            holder = LockHolder.read(holder_path(path))
            stop = (f"or stop that process (on host {holder.host}: kill {holder.pid}); "
                    if holder is not None else "or stop that process; ")
            raise WarehouseBusy(
                f"another run is writing to {path}: the writer lock is held by {_holder_text(path, date=True)}, "
                f"and {timeout:.0f} s of waiting did not free it. Wait for that run to finish, {stop}the lock "
                f"frees itself when the process ends. Do not delete {lock_path(path)}: a live writer keeps "
                "writing and would publish over the next one") from None
    try:
        LockHolder.this_process().write(holder_path(path))
    except OSError:
        pass  # the record is for people; the lock itself holds
    return lock


# ---------------------------------------------------------------------------
# Staging files
# ---------------------------------------------------------------------------

#: The name after the prefix: DuckDB adds ``.wal`` (its log) and ``.tmp`` (a folder it spills to).
_STAGING = re.compile(r"pid(?P<pid>\d+)@(?P<host>.+)-[a-z0-9_]+(?:\.wal|\.tmp)?")


def new_staging_file(path: Path) -> Path:
    """A new, empty, private staging file beside ``path``, named after this process."""
    fd, name = tempfile.mkstemp(prefix=f"{staging_prefix(path)}pid{os.getpid()}@{_host()}-", dir=path.parent)
    os.close(fd)
    return Path(name)


def staging_owner(path: Path, staging: Path) -> tuple[int, str] | None:
    """(pid, host) of the writer a staging file (or its .wal or .tmp) of warehouse ``path`` belongs to;
    None for a name this code does not write (an earlier version's ``.<db>.staging-XXXXXXXX``)."""
    rest = staging.name[len(staging_prefix(path)):]
    m = _STAGING.fullmatch(rest)
    return (int(m["pid"]), m["host"]) if m else None


def remove_stale_staging(path: Path) -> list[Path]:
    """Remove the staging files of ``path`` left by writers that are no longer alive on this
    host (called with the writer lock held). A live writer's are kept, whoever holds the lock
    (someone may have deleted the lock file), and so are those written from another host. An
    unnamed one (written by an earlier version, which removed every staging file it found
    under the lock) is removed as before.

    Returns
    -------
    list of Path
        The files removed.
    """
    removed = []
    for p in sorted(path.parent.glob(staging_prefix(path) + "*")):
        owner = staging_owner(path, p)
        if owner is not None and (owner[1] != _host() or pid_alive(owner[0])):
            continue
        remove_staging_path(p)
        removed.append(p)
    return removed


def remove_staging_path(p: Path) -> None:
    """Remove a staging file, its WAL, or DuckDB's spill folder (``.tmp``) beside it."""
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


# ---------------------------------------------------------------------------
# Owner, group and mode of the published file
# ---------------------------------------------------------------------------

def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def keep_attributes(new: Path, published: Path) -> list[str]:
    """Give ``new`` (about to replace ``published``) the published file's owner (where this user
    may: only root gives a file away), group and mode; for a first publish, the mode a plain
    write would give (0o666 less the umask).

    Returns
    -------
    list of str
        What could not be kept (e.g. the group, when this user is not a member of it).
    """
    try:
        st = os.stat(published)
    except FileNotFoundError:
        os.chmod(new, _new_file_mode())
        return []
    problems = []
    try:
        os.chown(new, st.st_uid, st.st_gid)
    except PermissionError:
        try:
            os.chown(new, -1, st.st_gid)
        except PermissionError:
            problems.append(f"group {st.st_gid} (this user is not a member of it)")
    os.chmod(new, stat.S_IMODE(st.st_mode))  # after chown, which may clear set-id bits
    return problems


# ---------------------------------------------------------------------------
# Disk full
# ---------------------------------------------------------------------------

_DISK_FULL_TEXT = ("no space left on device", "disk is full", "disk full", "enospc", "disk quota exceeded")


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the disk is full: an OSError
    ENOSPC/EDQUOT, or DuckDB's I/O error saying so in its message."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(t in str(exc).lower() for t in _DISK_FULL_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def free_mb(folder: Path) -> int:
    """Megabytes free in ``folder``'s file system (-1 when it cannot be told)."""
    try:
        return int(shutil.disk_usage(folder).free // (1 << 20))
    except OSError:
        return -1


def disk_full_error(path: Path) -> DiskFull:
    """The one-line error of a write to warehouse ``path`` that ran out of disk (its staging file
    already removed)."""
    free = free_mb(Path(path).parent)
    space = "free space unknown" if free < 0 else f"{free:,} MB free"
    return DiskFull(f"disk full while writing {path}: {space}; nothing was published (the staging copy was "
                    "removed); free some space and run it again")
