"""A new Prefect database in one step: the schema that Prefect's migrations build, replayed.

A Prefect server on a new SQLite database first runs every one of its Alembic migrations (over
a hundred: about 8 s of one core here), which was most of the wait for the first `srcnn`
command on a new machine (19 s, against 11 s for the next: benchmarks/startup.py). What those
migrations leave behind, as the `sqlite3` dump of a database `prefect server database upgrade`
made (tables, indexes, the Alembic revision; 47 kB of SQL), is kept in `prefect_schema/` for
the pinned Prefect version. The servers the CLI starts (a command's temporary one, `srcnn
serve`, `srcnn ui`) replay it into their database when that does not exist yet: the same
database in a few milliseconds, in which the server finds nothing to migrate. Another Prefect
version, a database that exists, or one configured elsewhere (PREFECT_API_DATABASE_CONNECTION_URL)
is left to Prefect, which migrates as before.

    python -m flows.prefect_db   # after a Prefect upgrade: store the schema of the new version
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

SCHEMAS = Path(__file__).parent / "prefect_schema"
DATABASE_URL_KEYS = ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL")


def schema_path() -> Path:
    """Where the schema of the installed Prefect is kept."""
    return SCHEMAS / f"prefect-{version('prefect')}.sql"


def default_database() -> Path | None:
    """The SQLite file a Prefect server started from this environment uses: Prefect's default,
    $PREFECT_HOME/prefect.db; None where the environment names another database."""
    if any(os.environ.get(key) for key in DATABASE_URL_KEYS):
        return None
    return Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser() / "prefect.db"


def create_database(database: Path | None = None) -> bool:
    """Create `database` (default: `default_database()`) from the stored schema, where it does
    not exist yet and the installed Prefect's schema is stored; True where it did. Written
    under a temporary name and linked into place, so a server never sees half a database and
    one that another process created meanwhile is kept."""
    database = database or default_database()
    schema = schema_path()
    if database is None or database.exists() or not schema.exists():
        return False
    database.parent.mkdir(parents=True, exist_ok=True)
    partial = database.with_name(f".{database.name}.{os.getpid()}.partial")
    try:
        with contextlib.closing(sqlite3.connect(partial)) as db:
            db.executescript(schema.read_text())
        os.link(partial, database)
    except FileExistsError:
        return False
    finally:
        partial.unlink(missing_ok=True)
    return True


def dump(database: Path) -> str:
    """The SQL that rebuilds `database`: its schema and rows, as `sqlite3` dumps them."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        return "\n".join(db.iterdump()) + "\n"


def migrated(home: Path) -> Path:
    """A database Prefect's own migrations built, in PREFECT_HOME `home`."""
    env = {key: value for key, value in os.environ.items() if key not in DATABASE_URL_KEYS}
    subprocess.run([sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
                   env={**env, "PREFECT_HOME": str(home)}, check=True,
                   stdout=subprocess.DEVNULL)
    return home / "prefect.db"


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        text = dump(migrated(Path(home)))
    SCHEMAS.mkdir(exist_ok=True)
    schema_path().write_text(text)
    print(f"wrote {schema_path()} ({len(text)} bytes)")


if __name__ == "__main__":
    main()
