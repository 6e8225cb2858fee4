"""``metering backends import``: which Azure OpenAI resource (ARM id, region) is behind each APIM
backend, so that metered rows meet the lines of the Azure bill."""

from __future__ import annotations

import argparse

from metering.cli.common import migrated_engine, out, read_text, refused


def cmd_backends_import(args: argparse.Namespace) -> int:
    from db.bill import load_backends, metered_backends, replace_backends
    from metering.finance.reconcile.bill import BillError, parse_backends_csv

    try:
        rows = parse_backends_csv(read_text(args.file), source=args.file)
    except BillError as exc:
        raise refused("backends not imported", exc) from None
    engine = migrated_engine(args)
    with engine.begin() as conn:
        count = replace_backends(conn, rows)
        mapped = set(load_backends(conn))
        seen = metered_backends(conn, None, None)
    out(f"imported {count} backend mapping(s) from {args.file}\n")
    unmapped = [backend for backend in seen if backend not in mapped]
    if unmapped:
        out(f"backends in the data without a resource (their usage cannot be reconciled with the bill): "
            f"{', '.join(unmapped)}\n")
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    backends = commands.add_parser("backends", help="APIM backend → Azure OpenAI resource (for the bill)")
    actions = backends.add_subparsers(dest="backends_command", required=True, metavar="ACTION")
    backends_import = actions.add_parser("import", help="import a CSV: backend_id,resource_id,region"
                                        "[,owner_subscription_id]")
    backends_import.add_argument("file", metavar="FILE", help="CSV with header backend_id,resource_id,region "
                                 "(resource_id: the account's ARM id; optional owner_subscription_id: who the true-up charges "
                                 "for the resource's bill lines that no metered row explains)")
    backends_import.set_defaults(handler=cmd_backends_import)
