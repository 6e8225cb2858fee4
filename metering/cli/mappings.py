"""``metering deployments import`` and ``metering subscriptions import``: the mapping CSVs that tie a
deployment name to its model and deployment type, and an APIM subscription to its business unit."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from metering.cli.common import migrated_engine, out, read_text, refused


def _import_mappings(args: argparse.Namespace, parse: Callable[..., list[Any]], replace: Callable[..., int], noun: str) -> int:
    """Parse a mapping CSV (every problem reported), then upsert it in one transaction."""
    from metering.price.rate_card import RateCardError

    text = read_text(args.file)
    try:
        rows = parse(text, source=args.file)
    except RateCardError as exc:
        raise refused(f"{noun}s not imported", exc) from None
    engine = migrated_engine(args)
    with engine.begin() as conn:
        count = replace(conn, rows)
    out(f"imported {count} {noun} mapping(s) from {args.file}\n")
    return 0


def cmd_deployments_import(args: argparse.Namespace) -> int:
    from db.rate_card import replace_deployments
    from metering.price.mappings import parse_deployments_csv

    return _import_mappings(args, parse_deployments_csv, replace_deployments, "deployment")


def cmd_subscriptions_import(args: argparse.Namespace) -> int:
    from db.subscriptions import replace_subscriptions
    from metering.price.mappings import parse_subscriptions_csv

    return _import_mappings(args, parse_subscriptions_csv, replace_subscriptions, "subscription")


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    deployments = commands.add_parser("deployments", help="deployment → model and deployment type")
    actions = deployments.add_subparsers(dest="deployments_command", required=True, metavar="ACTION")
    deployments_import = actions.add_parser("import", help="import a CSV: backend_id,deployment,model,deployment_type")
    deployments_import.add_argument("file", metavar="FILE", help="CSV with header backend_id,deployment,model,deployment_type")
    deployments_import.set_defaults(handler=cmd_deployments_import)

    subscriptions = commands.add_parser("subscriptions", help="APIM subscription → business unit")
    actions = subscriptions.add_subparsers(dest="subscriptions_command", required=True, metavar="ACTION")
    subscriptions_import = actions.add_parser("import", help="import a CSV: subscription_id,business_unit,cost_center,owner")
    subscriptions_import.add_argument("file", metavar="FILE", help="CSV with header subscription_id,business_unit,cost_center,owner")
    subscriptions_import.set_defaults(handler=cmd_subscriptions_import)
