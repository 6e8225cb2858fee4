"""What every command shares: the database from ``--db``, bad input as ``UsageError`` (one line,
exit status 2), reading and writing the user's files, and the pipeline settings.

Imports here stay light (standard library only at module level): ``metering --help`` must not
load SQLAlchemy, pandas or the Azure SDKs.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from metering.finance.report.options import Period
    from metering.model import PipelineSettings


class UsageError(Exception):
    """Bad input from the user: printed as a one-line message, exit status 2."""


def refused(what: str, problems: Exception) -> UsageError:
    """``what`` refused for ``problems``: one line when there is one problem, else a line per problem,
    each shown escaped (problems quote the input, which may carry terminal escapes)."""
    from metering.safe_text import terminal_line

    lines = [terminal_line(line) for line in str(problems).splitlines() if line.strip()]
    if len(lines) == 1:
        return UsageError(f"{what}: {lines[0]}")
    return UsageError(f"{what}:\n" + "\n".join(lines))


class FetchFailed(Exception):
    """A download that failed for reasons outside the user's input (no internet): exit status 1."""


def engine(args: argparse.Namespace) -> Engine:
    """The engine for ``--db`` / ``METERING_DATABASE_URL``; a URL that cannot be used is bad input
    (the message never repeats the URL, which may carry a password)."""
    import sqlalchemy as sa

    from db.engine import DatabaseFolderMissing, database_url, make_engine

    try:
        return make_engine(database_url(args.db))
    except DatabaseFolderMissing as exc:
        raise UsageError(f"--db / METERING_DATABASE_URL: {exc}") from None
    except sa.exc.NoSuchModuleError as exc:  # a dialect or driver SQLAlchemy does not know
        raise UsageError(f"--db / METERING_DATABASE_URL: not a usable database URL ({exc}); "
                         "expected e.g. sqlite:///metering.db or postgresql+psycopg://user@host/db") from None
    except sa.exc.ArgumentError:
        raise UsageError("--db / METERING_DATABASE_URL: not a database URL; expected e.g. sqlite:///metering.db, "
                         "postgresql+psycopg://user@host/db or mssql+pyodbc://@server/db?driver=...") from None
    except ValueError:  # sqlalchemy's URL parser: a port that is not a number
        raise UsageError("--db / METERING_DATABASE_URL: not a valid database URL (is the port a number?); expected "
                         "e.g. sqlite:///metering.db or postgresql+psycopg://user@host:5432/db") from None
    except ImportError as exc:  # a known dialect whose driver package is not installed
        extra = {"pyodbc": "mssql", "psycopg": "postgres"}.get(exc.name or "")
        hint = f": pip install 'aoai-metering[{extra}]'" if extra else ""
        raise UsageError(f"--db / METERING_DATABASE_URL: the database URL's driver is not installed ({exc.name or exc})"
                         f"{hint}") from None


def migrated_engine(args: argparse.Namespace) -> Engine:
    """The engine for ``--db``, failing with a helpful message when the database has not been migrated."""
    import sqlalchemy as sa

    from db.engine import safe_url

    db = engine(args)
    if db.url.get_backend_name() == "sqlite" and db.url.database not in (None, "", ":memory:") \
            and "mode=memory" not in str(db.url) and not Path(db.url.database).exists():
        # Connecting would create an empty file under a mistyped name (sqlite:///metring.db).
        raise UsageError(f"database {safe_url(db.url)} does not exist: check --db, or create it with "
                         "`metering db upgrade`")
    if not sa.inspect(db).has_table("usage_records"):
        raise UsageError(f"database {safe_url(db.url)} has no metering tables: run `metering db upgrade` first")
    return db


def output_format(output: str | None, explicit: str | None, formats: tuple[str, ...]) -> str:
    """The format asked for: ``--format``, else the ``--output`` file's extension (report.csv → csv),
    else ``table`` on the terminal. An extension that names no format is refused (never a text table
    in a file called .xls), and so is a file name without one."""
    if explicit:
        return explicit
    if not output:
        return "table"
    suffix = Path(output).suffix.lower().lstrip(".")
    suffix = {"htm": "html", "txt": "table"}.get(suffix, suffix)
    if suffix in formats:
        return suffix
    from metering.safe_text import terminal_line

    choices = ", ".join(f".{f}" for f in formats if f != "table")
    shown = terminal_line(output)
    if not suffix:
        raise UsageError(f"--output {shown}: no extension to tell the format by; use one of {choices} "
                         "(or .txt for the table), or give --format")
    raise UsageError(f"--output {shown}: .{terminal_line(suffix)} is not a format this command writes; use one of {choices} "
                     "(or .txt for the table), or give --format")


def input_file(path: str) -> Path:
    """An input file the user named: a folder or a missing path is bad input, each said plainly."""
    from metering.safe_text import terminal_line

    file = Path(path)
    if file.is_dir():
        raise UsageError(f"{terminal_line(path)}: is a folder; give the file inside it")
    if not file.is_file():
        raise UsageError(f"{terminal_line(path)}: no such file")
    return file


def read_text(path: str) -> str:
    file = input_file(path)
    try:
        return file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None


def write_file(path: str, content: str | bytes) -> None:
    """Write an output file; a path that cannot be written is bad input, not a traceback."""
    try:
        if isinstance(content, bytes):
            Path(path).write_bytes(content)
        else:
            Path(path).write_text(content, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot write ({exc.strerror or exc})") from None


@contextlib.contextmanager
def reports_extra(what: str) -> Iterator[None]:
    """XLSX and Parquet need the optional ``reports`` packages: say how to install them, no traceback."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] not in ("openpyxl", "pyarrow"):
            raise
        raise UsageError(f"{what} needs {exc.name.split('.')[0]}, which is not installed: "
                         "pip install 'aoai-metering[reports]'") from None


def out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def read_secret_file(path: str) -> bytes:
    """The signing key from a file: its bytes, without a trailing line ending."""
    file = input_file(path)
    secret = file.read_bytes().rstrip(b"\r\n")
    if not secret:
        raise UsageError(f"{path}: the signing secret file is empty")
    return secret


def pipeline_settings(args: argparse.Namespace) -> PipelineSettings:
    """Settings from the environment (``METERING_SIGNING_SECRET`` …), with ``--signing-secret-file``."""
    from metering.settings import settings_from_env

    secret_file = getattr(args, "signing_secret_file", None)
    try:
        return settings_from_env(signing_secret=read_secret_file(secret_file) if secret_file else None)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def period(args: argparse.Namespace) -> Period:
    """``--month`` or ``--since``/``--until`` (all time when none is given)."""
    from metering.finance.report.options import Period

    try:
        if args.month:
            if args.since or args.until:
                raise UsageError("use either --month or --since/--until, not both")
            return Period.month(args.month)
        return Period.between(args.since, args.until)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
