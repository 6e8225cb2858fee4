"""``metering batch import FILE... --batch-id ID``: meter a finished Batch API job from its output
file(s), when the batch object the gateway saw carried no ``usage``. Once: the job's row is
``batch:<ID>``, whichever of a retrieve or an import comes first; a second import is a duplicate."""

from __future__ import annotations

import argparse
import re
from dataclasses import replace

from metering.cli.common import UsageError, migrated_engine, out
from metering.safe_text import terminal_line
from metering.sources.bounds import BATCH_OUTPUT_MAX_LINE_BYTES

BATCH_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
SUBSCRIPTION_ID = re.compile(r"[^\s\x00-\x1f\x7f-\x9f]{1,200}")


def cmd_batch_import(args: argparse.Namespace) -> int:

    from db.rate_card import load_rate_card
    from db.batches import job_created_at, job_creator, settle_creators
    from db.store import store_batch
    from decimal import Decimal

    from metering.model import BadEvent, BatchOutcome
    from metering.pipeline import build_batch_usage, check_record
    from metering.price.rate_card import parse_date
    from metering.sources.batch_outputs import BatchOutputError, output_file_lines, read_batch_outputs

    if args.max_line_bytes <= 0:
        raise UsageError("--max-line-bytes must be a positive number of bytes")
    if not BATCH_ID.fullmatch(args.batch_id):
        raise UsageError(f"--batch-id {terminal_line(args.batch_id)[:80]!s}: not a batch id (letters, digits, "
                         "'_' and '-', at most 128; e.g. batch_6f1c2d3e…)")
    if args.subscription is not None and not SUBSCRIPTION_ID.fullmatch(args.subscription):
        raise UsageError(f"--subscription {terminal_line(args.subscription)[:80]}: not a subscription id "
                         "(printable, no spaces, at most 200 characters)")
    max_line_bytes = args.max_line_bytes
    for path in args.files:  # refuse a missing file before touching the database; lines are read later, streamed
        try:
            open(path, "rb").close()
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    engine = migrated_engine(args)
    with engine.connect() as conn:
        card = load_rate_card(conn)
        created = job_created_at(conn, args.batch_id)
        creator = job_creator(conn, args.batch_id)
    if args.subscription and creator and creator != args.subscription:
        raise UsageError(f"--subscription {args.subscription}: the gateway saw subscription {terminal_line(creator)} "
                         f"create batch {args.batch_id}; the job is charged to its creator")
    try:
        at = parse_date(args.at, "--at") if args.at else created
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        files = [(path, output_file_lines(path, max_line_bytes)) for path in args.files]
        output = read_batch_outputs(files, args.batch_id, at, deployment=args.deployment)
        if output.usage.finished_at is None:
            raise UsageError(f"batch {args.batch_id}: the gateway did not see its creation and its output carries no "
                             "'created' times: give --at DATE (when the job finished)")
        record = build_batch_usage(None, output.usage, card)
        if args.subscription and not creator:
            record = replace(record, subscription_id=args.subscription)
        check_record(record)
    except BatchOutputError as exc:
        raise UsageError(f"batch not imported: {exc}") from None
    except BadEvent as exc:
        raise UsageError(f"batch not imported: {exc.detail}") from None
    with engine.begin() as conn:
        stored = store_batch(conn, BatchOutcome(batch_usage=[record]))
    with engine.begin() as conn:  # a creation committed meanwhile, unseen by the import (db/batches.py)
        settle_creators(conn, [args.batch_id])
    what = (f"batch {args.batch_id}: {output.billed_requests:,} request(s) billed, {output.failed_requests:,} failed "
            f"(not billed), {record.total_tokens:,} tokens, model {terminal_line(record.model or '(unknown)')}, "
            f"{record.deployment_type}, {record.price_status}")
    if record.total_cost is not None:
        what += f", cost {record.total_cost.quantize(Decimal('0.000001'))} {record.currency}"
    if stored.batches_metered:
        out(f"{what}: metered\n")
    else:
        out(f"{what}: already metered (from a retrieve or an earlier import), nothing changed\n")
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    batch = commands.add_parser("batch", help="Batch API jobs")
    actions = batch.add_subparsers(dest="batch_command", required=True, metavar="ACTION")
    batch_import = actions.add_parser("import", help="meter a finished batch job from its output file(s), once")
    batch_import.add_argument("files", nargs="+", metavar="FILE", help="the job's output file(s) (JSONL: one response per line)")
    batch_import.add_argument("--batch-id", required=True, help="the batch id (batch_…), the key that keeps a job metered once")
    batch_import.add_argument("--deployment", help="the global-batch or datazone-batch deployment the job ran on (for its model and type)")
    batch_import.add_argument("--at", metavar="DATE", help="when the job finished (default: its creation time if the gateway "
                              "saw it, else the latest 'created' time of its responses)")
    batch_import.add_argument("--subscription", metavar="ID", help="the APIM subscription to charge when the gateway did not "
                              "see the job's creation (refused when the gateway saw another create it)")
    batch_import.add_argument("--max-line-bytes", type=int, default=BATCH_OUTPUT_MAX_LINE_BYTES, metavar="N",
                              help=f"refuse an output line longer than this (default {BATCH_OUTPUT_MAX_LINE_BYTES:,}: one embeddings "
                                   "response of 2,048 inputs); lines are read one at a time")
    batch_import.set_defaults(handler=cmd_batch_import)
