"""Applies the sample app's SQL migrations (migrations/NNN_name.sql, in name order) to DATABASE_URL.

Run as dropstack's release command (`python migrate.py`), in the new release before it goes live:
each migration runs in its own transaction and is recorded in schema_migrations, so a run applies
only what is new, and a failing migration leaves the schema as it was (the release is refused and
the live one keeps serving). An advisory lock keeps two runs from interleaving.
"""
import os
import pathlib
import sys

import psycopg2

MIGRATIONS = pathlib.Path(__file__).resolve().parent / "migrations"
LOCK_KEY = 0x64726F70  # "drop": any constant the app's other code does not use


def main() -> int:
    url = os.environ.get("DATABASE_URL")
    if not url:
        print("migrate: DATABASE_URL is not set; nothing to migrate", file=sys.stderr)
        return 1
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur.execute("SELECT version FROM schema_migrations")
            applied = {row[0] for row in cur.fetchall()}
        for path in sorted(MIGRATIONS.glob("*.sql")):
            if path.stem in applied:
                continue
            with conn, conn.cursor() as cur:
                cur.execute(path.read_text(encoding="utf-8"))
                cur.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (path.stem,))
            print(f"migrate: applied {path.stem}")
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
