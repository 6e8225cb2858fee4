"""``metering``: the command line (DESIGN.md "CLI contract"), one module per command group.

Database: ``--db URL`` or ``METERING_DATABASE_URL``, default ``sqlite:///metering.db``.
Exit status: 0 on success, 2 for bad input (a clear message on stderr), 1 for other failures.
Each command imports what it needs when it runs, so ``metering --help`` loads no SQL, pandas or SDK.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from metering.cli import (
    backends, batch, bill, budgets, consume, database, export, mappings, ptu, quarantine, rates, reconcile, replay,
    report, reprice, true_up,
)
from metering.cli.common import FetchFailed, UsageError

COMMAND_GROUPS = (database, replay, consume, rates, mappings, backends, bill, reconcile, true_up, reprice, report, ptu,
                  export, quarantine, batch, budgets)


def _version() -> str:
    """The installed distribution's version (``pyproject.toml``), or the source tree's when not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aoai-metering")
    except PackageNotFoundError:
        return "0+unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metering",
        description="Usage metering and chargeback for Azure OpenAI behind Azure API Management.",
    )
    parser.add_argument("--db", metavar="URL", help="database URL (default: $METERING_DATABASE_URL or sqlite:///metering.db)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    parser.add_argument("--version", action="version", version=f"metering {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import sqlalchemy as sa  # after parsing: --help and usage errors never pay for it

    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"metering: {exc}", file=sys.stderr)
        return 2
    except FetchFailed as exc:
        print(f"metering: {exc}", file=sys.stderr)
        return 1
    except sa.exc.OperationalError as exc:  # unreachable, refused, bad credentials: one line, as for bad input
        print(f"metering: database error: {' '.join(str(exc.orig).split())}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
