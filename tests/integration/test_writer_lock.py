"""The writer lock survives its operators (issue 9, part 6, points 3, 5 and 6).

* A live writer's staging file is never removed, not even when someone deletes the lock file
  (the old advice), and the second writer that got in then cannot silently publish over the
  first: the later publish refuses with WarehouseChanged. Checked against real processes.
* The busy error and a waiting writer name the holder (pid, host, command, since when) and the
  advice never says to delete the lock file.
* A full disk (ENOSPC during the staging copy or the checkpoint) is one line, removes the
  staging file and its WAL, and publishes nothing; also through the CLI.
* A publish keeps the published file's group, mode and (where permitted) owner.
"""

from __future__ import annotations

import errno
import grp
import os
import select
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from ketaoutcomes.cli import app
from ketaoutcomes.snapshots import is_disk_full, staging_owner
from ketaoutcomes.warehouse import DiskFull, WarehouseBusy, WarehouseChanged, read_connection, write_session
from tests.conftest import write_export

runner = CliRunner()


def staging_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".staging-" in p.name)


def table_rows(db: Path) -> list[int]:
    con = read_connection(db)
    try:
        return [r[0] for r in con.execute("SELECT x FROM t ORDER BY x").fetchall()]
    finally:
        con.close()


def wait_for(path: Path, proc: subprocess.Popen, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, f"process ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"{what} not reached in time"
        time.sleep(0.05)


@pytest.fixture
def db(tmp_path) -> Path:
    path = tmp_path / "w.duckdb"
    with write_session(path) as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
    return path


HOLDER = """
import sys, time
from pathlib import Path
from ketaoutcomes.warehouse import write_session
db, marker, go = (Path(a) for a in sys.argv[1:4])
with write_session(db) as con:
    con.execute("INSERT INTO t VALUES (2)")
    marker.write_text("in")
    while not go.exists():
        time.sleep(0.05)
"""


def frozen_ingest(db: Path, export: Path, marker: Path, point: str = "ingest.before_write") -> subprocess.Popen:
    """`python -m ketaoutcomes ingest` frozen at a failpoint while it holds the writer lock."""
    # TMPDIR: a killed ingest leaves its scratch folder behind; in the test's folder, not the system's
    env = {**os.environ, "KETAOUTCOMES_FAILPOINT": point, "KETAOUTCOMES_FAILPOINT_MARKER": str(marker),
           "TMPDIR": str(db.parent)}
    env.pop("KETAOUTCOMES_FAILPOINT_ACTION", None)
    proc = subprocess.Popen([sys.executable, "-m", "ketaoutcomes", "ingest", str(export), "--db", str(db)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(marker, proc, point)
    return proc


# ---------------------------------------------------------------------------
# 3. A live writer's staging file, the busy message, a waiting writer
# ---------------------------------------------------------------------------

def test_deleting_the_lock_file_neither_removes_a_live_writers_staging_nor_loses_a_publish(db, tmp_path):
    """Writer A (another process) works on its copy; someone deletes the lock file, as the old
    busy message advised; writer B gets in. B must leave A's staging file alone (it used to delete
    it as stale), and A, finishing after B published, must not publish its older copy over B's."""
    marker, go = tmp_path / "in", tmp_path / "go"
    a = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), str(marker), str(go)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(marker, a, "writer A's session")
        (a_staging,) = [n for n in staging_files(tmp_path) if not n.endswith(".wal")]
        assert staging_owner(db, tmp_path / a_staging)[0] == a.pid
        (tmp_path / "w.duckdb.lock").unlink()  # what the old WarehouseBusy message advised
        with write_session(db, lock_timeout=5) as con:  # writer B
            con.execute("INSERT INTO t VALUES (3)")
        assert a_staging in staging_files(tmp_path), "B removed a live writer's staging file"
        assert table_rows(db) == [1, 3]
    finally:
        go.write_text("go")
        out, err = a.communicate(timeout=120)
    assert a.returncode != 0 and "WarehouseChanged" in err and "was replaced while this run worked" in err, err
    assert table_rows(db) == [1, 3]  # B's publish stands; A published nothing
    assert staging_files(tmp_path) == []  # A removed its own staging file on the way out


def test_only_staging_files_of_ended_processes_on_this_host_are_removed(db, tmp_path):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(ended.stdout)
    import socket

    host = socket.gethostname()
    dead = tmp_path / f".w.duckdb.staging-pid{dead_pid}@{host}-abc123"
    dead_wal = tmp_path / f".w.duckdb.staging-pid{dead_pid}@{host}-abc123.wal"
    dead_spill = tmp_path / f".w.duckdb.staging-pid{dead_pid}@{host}-abc123.tmp"  # DuckDB's spill folder
    dead_spill.mkdir()
    (dead_spill / "duckdb_temp_storage-0.tmp").write_bytes(b"x")
    alive = tmp_path / f".w.duckdb.staging-pid{os.getpid()}@{host}-zzz999"  # this test process: alive
    foreign = tmp_path / ".w.duckdb.staging-pid1@another-host.example-q1w2e3"  # cannot be checked from here
    for p in (dead, dead_wal, alive, foreign):
        p.write_bytes(b"x")
    with write_session(db) as con:
        con.execute("INSERT INTO t VALUES (2)")
    assert staging_files(tmp_path) == sorted([alive.name, foreign.name])


def test_busy_error_names_the_holder_and_never_advises_deleting_the_lock(tmp_path):
    db = tmp_path / "w.duckdb"
    export = write_export(tmp_path / "export")
    holder = frozen_ingest(db, export, tmp_path / "marker")
    notices: list[str] = []
    try:
        with pytest.raises(WarehouseBusy) as info:
            with write_session(db, lock_timeout=1, notice=notices.append):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"pid {holder.pid} on host " in msg and "(ketaoutcomes ingest " in msg and " UTC)" in msg
    assert "Do not delete" in msg and "remove the lock file" not in msg and f"kill {holder.pid}" in msg
    assert len(notices) == 1 and notices[0].startswith(f"waiting for the writer lock of {db} held by pid {holder.pid}")


def test_a_waiting_writer_says_whose_lock_it_waits_for_then_loads(tmp_path):
    """Real processes: an ingest frozen while it holds the lock, a second ingest waiting for it (one
    line on stderr naming the holder), the first killed: the second then loads, and the killed
    writer's staging file is gone."""
    db = tmp_path / "w.duckdb"
    export = write_export(tmp_path / "export")
    first = frozen_ingest(db, export, tmp_path / "marker", point="warehouse.before_publish")
    second = subprocess.Popen([sys.executable, "-m", "ketaoutcomes", "ingest", str(export), "--db", str(db)],
                              env={k: v for k, v in os.environ.items() if not k.startswith("KETAOUTCOMES_FAILPOINT")},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([second.stderr], [], [], 120)  # it says so at once, not after the wait
        assert ready, "the waiting writer said nothing"
        line = second.stderr.readline()
        assert line.startswith(f"waiting for the writer lock of {db} held by pid {first.pid} on host "), line
        assert "(ketaoutcomes ingest " in line and " UTC)" in line and second.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert "patients.csv: loaded (3 read" in err
    assert staging_files(tmp_path) == []


# ---------------------------------------------------------------------------
# 5. Disk full
# ---------------------------------------------------------------------------

def _full_disk_copy(src, dst, *args, **kwargs):
    """shutil.copyfile on a disk that fills half-way: a partial file, then ENOSPC."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: len(data) // 2])
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))


def _assert_disk_full_line(msg: str, db: Path) -> None:
    assert "\n" not in msg
    assert msg.startswith(f"disk full while writing {db}: ") and " MB free; nothing was published" in msg


def test_disk_full_while_copying_removes_the_partial_staging_file(db, tmp_path, monkeypatch):
    before = db.read_bytes()
    monkeypatch.setattr("shutil.copyfile", _full_disk_copy)
    with pytest.raises(DiskFull) as info:
        with write_session(db) as con:
            con.execute("INSERT INTO t VALUES (2)")
    _assert_disk_full_line(str(info.value), db)
    assert db.read_bytes() == before and staging_files(tmp_path) == []


@pytest.mark.parametrize("point", ["warehouse.after_copy", "warehouse.checkpoint"])
def test_disk_full_at_a_failpoint_publishes_nothing_and_leaves_no_staging(db, tmp_path, monkeypatch, point):
    before = db.read_bytes()
    monkeypatch.setenv("KETAOUTCOMES_FAILPOINT", point)
    monkeypatch.setenv("KETAOUTCOMES_FAILPOINT_ACTION", "enospc")
    with pytest.raises(DiskFull) as info:
        with write_session(db) as con:
            con.execute("INSERT INTO t VALUES (2)")
    _assert_disk_full_line(str(info.value), db)
    assert db.read_bytes() == before and staging_files(tmp_path) == []


@pytest.mark.parametrize("how", ["copy", "checkpoint"])
def test_disk_full_through_the_cli_is_one_line(tmp_path, monkeypatch, how):
    db = tmp_path / "w.duckdb"
    export = write_export(tmp_path / "export")
    assert runner.invoke(app, ["ingest", str(export), "--db", str(db)]).exit_code == 0
    before = db.read_bytes()
    if how == "copy":
        monkeypatch.setattr("shutil.copyfile", _full_disk_copy)
    else:
        monkeypatch.setenv("KETAOUTCOMES_FAILPOINT", "warehouse.checkpoint")
        monkeypatch.setenv("KETAOUTCOMES_FAILPOINT_ACTION", "enospc")
    res = runner.invoke(app, ["validate", "--db", str(db)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    (line,) = res.stderr.strip().splitlines()
    _assert_disk_full_line(line.removeprefix("error: "), db)
    assert db.read_bytes() == before and staging_files(tmp_path) == []


def test_duckdbs_own_disk_full_error_is_recognised():
    assert is_disk_full(duckdb.IOException('IO Error: Could not write file "x.duckdb": No space left on device'))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(duckdb.IOException("IO Error: Could not set lock on file"))


# ---------------------------------------------------------------------------
# 6. Owner, group and mode survive a publish
# ---------------------------------------------------------------------------

def _another_group(current: int) -> int | None:
    """A group the file may be given: one the test user belongs to, or, for root (who may give a
    file any group), any other group of the system."""
    mine = [g for g in {*os.getgroups(), os.getegid()} if g != current]
    if mine:
        return mine[0]
    if os.geteuid() == 0:
        return next((g.gr_gid for g in grp.getgrall() if g.gr_gid != current), None)
    return None


def test_a_publish_keeps_the_files_group_and_mode(db):
    gid = _another_group(db.stat().st_gid)
    if gid is None:
        pytest.skip(f"the test user belongs to a single group ({os.getegid()}): a second one is needed to see a "
                    "group kept")
    os.chown(db, -1, gid)
    db.chmod(0o640)
    for _ in range(2):
        with write_session(db) as con:
            con.execute("INSERT INTO t VALUES (2)")
        assert db.stat().st_gid == gid and stat.S_IMODE(db.stat().st_mode) == 0o640


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may give a file to another owner (and keep it so)")
def test_a_publish_keeps_the_files_owner_where_permitted(db):
    os.chown(db, 65534, 65534)
    with write_session(db) as con:
        con.execute("INSERT INTO t VALUES (2)")
    st = db.stat()
    assert (st.st_uid, st.st_gid) == (65534, 65534)


def test_the_group_a_user_may_not_give_is_a_warning_and_the_publish_goes_ahead(db, monkeypatch):
    """A writer outside the file's group cannot keep it: it says so (one line) and still publishes
    (its readers' loss is said; holding back the data would not help them)."""
    real_chown = os.chown

    def chown(path, uid, gid, *args, **kwargs):
        if ".staging-" in str(path):
            raise PermissionError(errno.EPERM, "Operation not permitted")
        return real_chown(path, uid, gid, *args, **kwargs)

    monkeypatch.setattr(os, "chown", chown)
    notices: list[str] = []
    with write_session(db, notice=notices.append) as con:
        con.execute("INSERT INTO t VALUES (2)")
    assert table_rows(db) == [1, 2]
    assert len(notices) == 1 and notices[0].startswith(f"warning: {db}: could not keep its group ")


def test_a_failed_publish_check_is_a_one_line_cli_error(tmp_path, monkeypatch):
    """WarehouseChanged is a user-facing error like the others (one line, exit 1)."""
    import ketaoutcomes.pipeline as pipeline

    def changed(*args, **kwargs):
        raise WarehouseChanged("w.duckdb was replaced while this run worked on its copy; nothing was published")

    monkeypatch.setattr(pipeline, "ingest_step", changed)
    res = runner.invoke(app, ["ingest", str(write_export(tmp_path / "export")), "--db", str(tmp_path / "w.duckdb")])
    assert res.exit_code == 1 and res.stderr.strip() == (
        "error: w.duckdb was replaced while this run worked on its copy; nothing was published")
