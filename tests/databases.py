"""Throwaway databases for tests and benchmarks that start their own processes: a SQLite file, or a fresh database
on the PostgreSQL that DATABASE_URL names (scripts/postgres.sh makes one on loopback)."""
from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path


def _connect_postgres(parts: dict, dbname: str | None = None):
    import psycopg

    return psycopg.connect(host=parts["HOST"], port=parts["PORT"] or 5432, user=parts["USER"], password=parts["PASSWORD"],
                           dbname=dbname or parts["NAME"], autocommit=True)


@contextlib.contextmanager
def throwaway_database(postgres_url: str | None, folder: Path, prefix: str = "ccrl") -> Iterator[str]:
    """The URL of a new empty database: on PostgreSQL when `postgres_url` is given (dropped afterwards), else a SQLite
    file in `folder`."""
    import dj_database_url

    if not postgres_url:
        yield f"sqlite:///{folder / f'{prefix}.sqlite3'}"
        return
    parts = dj_database_url.parse(postgres_url)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with _connect_postgres(parts) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        _drop_database(parts, name)


def _drop_database(parts: dict, name: str, attempts: int = 10) -> None:
    """DROP ... WITH (FORCE) ends the sessions still on the database, but a non-superuser cannot end one of the
    server's own (an autovacuum worker that started on the fresh tables): such a session ends by itself within
    seconds, so the drop is tried again."""
    import time

    import psycopg

    for attempt in range(attempts):
        try:
            with _connect_postgres(parts) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ObjectInUse):
            if attempt == attempts - 1:
                raise
            time.sleep(1)


def query_database(url: str, sql: str) -> list[tuple]:
    """Rows of `sql` on a SQLite or PostgreSQL database given by its URL (outside Django's connections); [] for a
    statement that returns none."""
    import dj_database_url

    parts = dj_database_url.parse(url)
    if parts["ENGINE"].endswith("sqlite3"):
        import sqlite3

        with sqlite3.connect(parts["NAME"]) as connection:
            cursor = connection.execute(sql)
            return cursor.fetchall() if cursor.description else []
    with _connect_postgres(parts) as connection:
        cursor = connection.execute(sql)
        return cursor.fetchall() if cursor.description else []


def seed_demo_database(env: dict[str, str], seed: int = 5, scenarios: int = 12) -> None:
    """Migrate the database `env["DATABASE_URL"]` names and fill it with a small demo, as separate processes would."""
    root = Path(__file__).resolve().parent.parent
    manage = [sys.executable, str(root / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], env=env, check=True, cwd=root)
    subprocess.run([*manage, "seed_demo", "--seed", str(seed), "--scenarios", str(scenarios)], env=env, check=True, cwd=root, capture_output=True)
