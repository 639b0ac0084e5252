"""Analysts' SQL (the ``query`` verb): one read-only statement on a sandboxed connection to the
published snapshot (:func:`ketaoutcomes.warehouse.read_connection`), and its ``--csv`` file, written
atomically and never over one of the warehouse's own files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import duckdb
import polars as pl

from ketaoutcomes.snapshots import holder_path, lock_path, staging_prefix
from ketaoutcomes.warehouse import published_mode, read_connection

__all__ = ["QUERY_ALLOWED", "QueryRefused", "check_output_path", "check_query", "query_connection", "run_query",
           "write_query_csv"]


#: What ``query`` runs; said once, for the refusal message, ``--help`` and the README.
QUERY_ALLOWED = (
    "one read-only statement: SELECT (also WITH ... SELECT, FROM ..., VALUES), DESCRIBE, SHOW, SUMMARIZE, "
    "or EXPLAIN [ANALYZE] of one of them"
)


class QueryRefused(ValueError):
    """SQL that ``query`` does not run, or a ``--csv`` target that is a warehouse file."""


def query_connection(path: Path) -> duckdb.DuckDBPyConnection:
    """A :func:`read_connection` that reaches nothing but the warehouse's tables.

    After the snapshot is attached (read-only), the connection is closed off, in this order:

    * ``temp_directory = ''``: nothing spills to disk, so a query needing more memory than
      DuckDB's limit fails with DuckDB's out-of-memory message (rather than with a permission
      error from the disabled file system below); it cannot be set once external access is off;
    * ``enable_external_access = false``: no file read or written by SQL (``read_text``,
      ``read_csv``, ``glob``, ``COPY``, ``EXPORT``), no ATTACH of another file, no extension
      installed or loaded. Set after the ATTACH because DuckDB then refuses to open any file;
      set at run time, DuckDB still allows the attached file itself;
    * ``disabled_filesystems = 'LocalFileSystem'``: so not even the warehouse file can be
      opened again (``DETACH`` and a read-write ``ATTACH`` would edit the published file in
      place, behind the writer lock); the open snapshot keeps being read through its handle;
    * ``lock_configuration = true``: no ``SET``/``RESET`` can undo the above.

    It is still the read-only snapshot of :func:`read_connection`: it never blocks a writer.
    """
    con = read_connection(path)
    try:
        for setting in ("temp_directory = ''", "enable_external_access = false",
                        "disabled_filesystems = 'LocalFileSystem'", "lock_configuration = true"):
            con.execute(f"SET {setting}")
    except BaseException:
        con.close()
        raise
    return con


def _tokens(sql: str) -> list[tuple[int, str]]:
    """DuckDB's tokens of ``sql`` (comments left out) as (offset, text); a keyword's text is
    upper-cased, other tokens keep their first character (enough for ``(``, ``)`` and ``;``)."""
    toks = duckdb.tokenize(sql)
    out = []
    for i, (pos, kind) in enumerate(toks):
        end = toks[i + 1][0] if i + 1 < len(toks) else len(sql)
        text = sql[pos:end].strip()
        if kind == duckdb.token_type.keyword:
            word = text.split(None, 1)[0] if text else ""
            text = "".join(ch for ch in word if ch.isalpha() or ch == "_").upper() or word
        else:
            text = text[:1]
        out.append((pos, text))
    return [t for t in out if t[1] != ";"]


def _statement(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[duckdb.StatementType, str]:
    """DuckDB's type and first word of the one statement in ``sql``, refusing anything else."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.ParserException:
        raise  # a syntax error: DuckDB's own message says where
    except duckdb.Error as exc:  # e.g. IMPORT DATABASE, which DuckDB expands by reading files
        first = (_tokens(sql) or [(0, "")])[0][1]
        raise QueryRefused(f"{first or 'this statement'} refused ({str(exc).splitlines()[0]}): "
                           f"query runs {QUERY_ALLOWED}") from None
    if not statements:
        raise QueryRefused(f"no SQL given: query runs {QUERY_ALLOWED}")
    if len(statements) > 1:
        words = "; ".join((_tokens(s.query) or [(0, s.type.name)])[0][1] for s in statements)
        raise QueryRefused(f"{len(statements)} statements ({words}) refused: query runs {QUERY_ALLOWED}")
    st = statements[0]
    tokens = _tokens(sql)
    return st.type, (tokens[0][1] if tokens else st.type.name)


def check_query(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse ``sql`` unless it is :data:`QUERY_ALLOWED`, as DuckDB's parser reads it.

    The statement type comes from DuckDB (``extract_statements``), on the sandboxed connection
    (DuckDB expands ``IMPORT DATABASE`` while parsing, by reading files). A ``PRAGMA`` that
    DuckDB rewrites into a SELECT is refused by its first word; ``EXPLAIN`` is checked on the
    statement it explains (``EXPLAIN ANALYZE`` runs it).

    Raises
    ------
    QueryRefused
        Not one allowed statement; the message names what was given and what is allowed.
    duckdb.ParserException
        Not SQL DuckDB can parse.
    """
    kind, word = _statement(con, sql)
    if kind == duckdb.StatementType.EXPLAIN and word == "EXPLAIN":
        tokens = _tokens(sql)[1:]
        if tokens and tokens[0][1] == "(":  # EXPLAIN (ANALYZE, FORMAT json) stmt
            depth = 0
            while tokens:
                depth += {"(": 1, ")": -1}.get(tokens[0][1], 0)
                tokens = tokens[1:]
                if depth == 0:
                    break
        else:  # EXPLAIN [ANALYZE] [VERBOSE] stmt
            for optional in ("ANALYZE", "ANALYSE", "VERBOSE"):
                if tokens and tokens[0][1] == optional:
                    tokens = tokens[1:]
        if not tokens:
            raise QueryRefused(f"EXPLAIN of nothing refused: query runs {QUERY_ALLOWED}")
        try:
            kind, word = _statement(con, sql[tokens[0][0]:])
        except duckdb.ParserException:
            raise QueryRefused(f"EXPLAIN of a statement it cannot read refused: query runs {QUERY_ALLOWED}") from None
        except QueryRefused as exc:
            raise QueryRefused(f"EXPLAIN of {exc}") from None
        if kind != duckdb.StatementType.SELECT or word in ("PRAGMA", "EXPLAIN"):
            raise QueryRefused(f"EXPLAIN of {word} refused: query runs {QUERY_ALLOWED}")
        return
    if kind != duckdb.StatementType.SELECT or word == "PRAGMA":
        raise QueryRefused(f"{word} refused: query runs {QUERY_ALLOWED}")


def run_query(path: Path, sql: str) -> pl.DataFrame:
    """Run an analyst's ``sql`` (:data:`QUERY_ALLOWED`) on :func:`query_connection`.

    Raises
    ------
    QueryRefused
        Not an allowed statement, or it reached for something outside the warehouse's tables
        (a file, another database, an extension): one line, DuckDB's reason included.
    duckdb.Error
        Any other error, with DuckDB's full message (e.g. its "Did you mean ...").
    """
    con = query_connection(path)
    try:
        check_query(con, sql)
        try:
            return con.execute(sql).pl()
        except duckdb.PermissionException as exc:
            raise QueryRefused("query reads only the warehouse's tables, not files, other databases or extensions "
                               f"(DuckDB: {str(exc).splitlines()[0]})") from None
    finally:
        con.close()


def _protected(db: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The warehouse's own files (published file, its WAL, the writer lock and its sidecar) and its staging
    files' (folder, name prefix), under the given and the resolved path."""
    files, staging = [], []
    for p in {Path(os.path.abspath(db)), Path(db).resolve()}:
        files += [p, Path(str(p) + ".wal"), lock_path(p), holder_path(p)]
        staging.append((p.parent.resolve(), staging_prefix(p)))
    return files, staging


def check_output_path(db: Path, target: Path) -> Path:
    """Refuse ``target`` (``query --csv``) when it is, or resolves to, a file of warehouse
    ``db``: the published file, its WAL, the writer lock (or its sidecar) or a staging file (also through a
    symlink, a relative path or a hard link).

    Returns
    -------
    Path
        Where the file will really be written (``target`` with symlinks resolved).
    """
    files, staging = _protected(db)
    real = Path(target).resolve()
    for t in {Path(os.path.abspath(target)), real}:
        clash = t in files or t.parent.resolve() / t.name in files or any(
            t.parent.resolve() == folder and t.name.startswith(prefix) for folder, prefix in staging)
        if not clash and t.exists():
            clash = any(f.exists() and os.path.samefile(t, f) for f in files)
        if clash:
            raise QueryRefused(f"--csv {target}: that is the warehouse's own file ({real}); "
                               "write the CSV somewhere else")
    return real


def write_query_csv(db: Path, frame: pl.DataFrame, target: Path) -> Path:
    """Write ``frame`` as CSV to ``target`` atomically (a temporary file in the same folder,
    then a rename): a failure leaves no partial file. ``target`` is checked with
    :func:`check_output_path` first; the file gets the mode a plain write would give it."""
    real = check_output_path(db, target)
    # Not named after the target: a name starting like a staging file could be swept away by a writer.
    fd, tmp_name = tempfile.mkstemp(prefix=".ketaoutcomes-csv-", suffix=".tmp", dir=real.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            frame.write_csv(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, published_mode(real))
        os.replace(tmp, real)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return real
