"""A new Prefect database from the stored schema (`flows/prefect_db.py`): the very database
Prefect's own migrations build, made without them, and only where none exists."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from importlib.metadata import version

from flows.prefect_db import create_database, default_database, migrated, schema_path


def contents(database) -> tuple[list, dict]:
    """Everything in a SQLite database: its schema objects, each table's rows and its columns
    in order. A table's SQL as the set of its lines: the order of its constraint clauses is
    not the same from one migration run to the next (Alembic's batch operations may order
    them anew each time)."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        master = sorted(((kind, name, table, sorted(line.strip().rstrip(",")
                                                    for line in (sql or "").splitlines()))
                         for kind, name, table, sql in db.execute(
                             "SELECT type, name, tbl_name, sql FROM sqlite_master")), key=str)
        tables = [name for kind, name, _, _ in master if kind == "table"]
        rows = {t: sorted(db.execute(f'SELECT * FROM "{t}"'), key=str) for t in tables}
        rows |= {f"columns of {t}": list(db.execute(f'PRAGMA table_info("{t}")')) for t in tables}
    return master, rows


def test_the_stored_schema_is_what_prefects_migrations_build(tmp_path):
    """For the installed Prefect (a new Prefect version needs `python -m flows.prefect_db`):
    the same tables, indexes, triggers and rows (the Alembic revision) as a database that
    `prefect server database upgrade` made; upgrading it again finds nothing to do."""
    assert schema_path().exists(), (
        f"no stored schema for Prefect {version('prefect')}: run python -m flows.prefect_db")
    reference = migrated(tmp_path / "migrated")
    made = tmp_path / "made" / "prefect.db"
    assert create_database(made)
    master, rows = contents(made)
    assert (master, rows) == contents(reference)
    assert len([m for m in master if m[0] == "table"]) > 20 and rows["alembic_version"]
    again = subprocess.run(
        [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
        env={**os.environ, "PREFECT_HOME": str(made.parent)}, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert contents(made) == (master, rows)


def test_only_a_missing_default_database_is_made(tmp_path, monkeypatch):
    """An existing database is never touched; a database named by the environment is left to
    Prefect; the default one is $PREFECT_HOME/prefect.db, made with its folder."""
    home = tmp_path / "home" / "deeper"
    monkeypatch.setenv("PREFECT_HOME", str(home))
    for key in ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL"):
        monkeypatch.delenv(key, raising=False)
    assert default_database() == home / "prefect.db"
    assert create_database() and (home / "prefect.db").exists()
    assert not [p for p in home.iterdir() if p.name != "prefect.db"]  # no partial file left
    with contextlib.closing(sqlite3.connect(home / "prefect.db")) as db:
        db.execute("CREATE TABLE mine (x)")
        db.commit()
    assert not create_database()  # exists: kept as it is
    assert any(m[1] == "mine" for m in contents(home / "prefect.db")[0])
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", "postgresql+asyncpg://db/prefect")
    assert default_database() is None and not create_database()
