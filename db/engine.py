"""Engines for the three supported servers, configured for safe concurrent batch writes.

SQLite (the local default) gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` so that several
writers queue instead of failing; PostgreSQL and SQL Server get pre-ping for long-lived
Function App processes; SQL Server gets ``fast_executemany`` for batch inserts.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

DEFAULT_DATABASE_URL = "sqlite:///metering.db"
DATABASE_URL_SETTING = "METERING_DATABASE_URL"


class DatabaseFolderMissing(ValueError):
    """A SQLite URL whose file would be in a folder that does not exist (never created implicitly)."""


def database_url(explicit: str | None = None) -> str:
    """The database to use: the explicit URL, else ``METERING_DATABASE_URL``, else local SQLite."""
    return explicit or os.environ.get(DATABASE_URL_SETTING) or DEFAULT_DATABASE_URL


def safe_url(url: str | URL) -> str:
    """The URL with any password hidden, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_setup(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" event below issue BEGIN
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout = 60000")
        cursor.execute("PRAGMA foreign_keys = ON")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # Take the write lock up front: a deferred transaction that later upgrades to a writer can
        # fail with "database is locked" under concurrency instead of waiting its turn.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def odbc_authentication_key(url: URL) -> URL:
    """``mssql+pyodbc`` URLs with the ODBC spelling ``Authentication=ActiveDirectoryMsi`` work as documented.

    SQLAlchemy's pyodbc connector recognises only a lower-case ``authentication`` query key; with any
    other spelling and no user name it adds ``Trusted_Connection=Yes`` next to ``Authentication=…``,
    which the Microsoft ODBC driver rejects ("Cannot use Authentication option with Integrated
    Security option", FA001). Rename the key so that both spellings connect."""
    if url.get_backend_name() != "mssql" or url.get_driver_name() != "pyodbc" or "authentication" in url.query:
        return url
    keys = [key for key in url.query if key.lower() == "authentication"]
    if not keys:
        return url
    return url.difference_update_query(keys).update_query_dict({"authentication": url.query[keys[0]]})


AZURE_CLI_AUTHENTICATION = "AzureCli"  # not an ODBC value: this module swaps it for an access token
SQL_COPT_SS_ACCESS_TOKEN = 1256  # msodbcsql.h: a pre-connect attribute carrying an Entra access token


def azure_cli_access_token(timeout: float = 60.0) -> bytes:
    """The signed-in Azure CLI user's Entra token for Azure SQL, packed as the ODBC driver takes it
    (little-endian length, then UTF-16-LE). For ``metering db upgrade`` from a deployment hook, a CI
    runner or a jump host without a browser: the ODBC driver's ActiveDirectoryInteractive works on
    Windows only, and it has no ActiveDirectoryDefault. The token is never printed or logged."""
    az = shutil.which("az")
    if az is None:
        raise RuntimeError("Authentication=AzureCli needs the Azure CLI (az) on PATH, signed in (az login)")
    result = subprocess.run([az, "account", "get-access-token", "--resource", "https://database.windows.net/",
                             "--query", "accessToken", "-o", "tsv"], capture_output=True, text=True, timeout=timeout)
    token = result.stdout.strip()
    if result.returncode != 0 or not token:
        raise RuntimeError("Authentication=AzureCli: az account get-access-token failed (is az logged in?)")
    raw = token.encode("utf-16-le")
    return struct.pack("<I", len(raw)) + raw


def _azure_cli_setup(engine: Engine) -> None:
    @sa.event.listens_for(engine, "do_connect")
    def _with_token(_dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
        # SQLAlchemy adds integrated security to a URL without user or Authentication: a token replaces it.
        cargs[0] = cargs[0].replace(";Trusted_Connection=Yes", "")
        cparams["attrs_before"] = {SQL_COPT_SS_ACCESS_TOKEN: azure_cli_access_token()}


def uses_azure_cli_token(url: URL) -> bool:
    """``mssql+pyodbc://@server/db?…&Authentication=AzureCli``: connect with the Azure CLI's token."""
    return (url.get_backend_name() == "mssql" and url.get_driver_name() == "pyodbc"
            and str(url.query.get("authentication", "")).lower() == AZURE_CLI_AUTHENTICATION.lower())


def check_sqlite_folder(url: URL) -> None:
    """Raise ``DatabaseFolderMissing`` when a SQLite file's folder does not exist: a mistyped path
    must not create folders and an empty database (a new file in an existing folder is fine)."""
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        folder = Path(url.database).expanduser().parent
        if not folder.is_dir():
            raise DatabaseFolderMissing(f"the SQLite database's folder {folder} does not exist "
                                        "(create it first, or check the path in the URL)")


def deadline_options(url: str | URL, seconds: float) -> dict[str, Any]:
    """Engine options that bound every wait of a request-serving engine to about ``seconds``: the
    connect (including a server that accepts and never answers), a statement, and waiting for a
    pooled connection. For the budget endpoint, which the gateway waits on only briefly."""
    parsed = make_url(url) if not isinstance(url, URL) else url
    backend = parsed.get_backend_name()
    options: dict[str, Any] = {"pool_timeout": seconds} if backend != "sqlite" else {}
    whole = max(1, int(seconds + 0.999))
    if backend == "postgresql":
        # libpq's connect_timeout covers the whole startup (TCP, TLS, authentication); 2 s is its minimum.
        options["connect_args"] = {"connect_timeout": max(2, whole),
                                   "options": f"-c statement_timeout={int(seconds * 1000)}"}
    elif backend == "mssql":
        options["connect_args"] = {"timeout": whole}  # pyodbc: the login timeout
        options["query_timeout_seconds"] = whole
    elif backend == "sqlite":
        options["connect_args"] = {"timeout": seconds, "check_same_thread": False, "cached_statements": 16}
    return options


def make_engine(url: str | URL | None = None, **kwargs: Any) -> Engine:
    """An engine for ``url`` (default: ``METERING_DATABASE_URL`` or ``sqlite:///metering.db``)."""
    parsed = odbc_authentication_key(make_url(database_url(url) if not isinstance(url, URL) else url))
    cli_token = uses_azure_cli_token(parsed)
    if cli_token:
        parsed = parsed.difference_update_query(["authentication"])
    backend = parsed.get_backend_name()
    query_timeout = kwargs.pop("query_timeout_seconds", None)
    # Statement parameters hold event data (ids, names, raw bytes): never in an error's message or a
    # traceback, where a poison event would print itself (and its prompt) into the logs.
    options: dict[str, Any] = {"hide_parameters": True}
    if backend == "sqlite":
        check_sqlite_folder(parsed)
        # sqlite3 keeps 128 prepared statements by default; a batch insert's text changes with its
        # row count, and each such statement is large: a long replay grew by ~40 MB until it was full.
        options["connect_args"] = {"timeout": 60, "check_same_thread": False, "cached_statements": 16}
    else:
        options["pool_pre_ping"] = True
        options["pool_recycle"] = 1800
    if backend == "mssql" and parsed.get_driver_name() == "pyodbc":
        options["fast_executemany"] = True
    options.update(kwargs)
    engine = sa.create_engine(parsed, **options)
    if backend == "sqlite":
        _sqlite_setup(engine)
    if query_timeout:
        @sa.event.listens_for(engine, "connect")
        def _query_timeout(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.timeout = query_timeout  # pyodbc: seconds a statement may run
    if cli_token:
        _azure_cli_setup(engine)
    return engine
