"""``metering consume``: read the event hub continuously (``metering.sources.consume``); the Azure
SDKs are imported only when the command runs."""

from __future__ import annotations

import argparse

from metering.cli.common import UsageError, migrated_engine


def cmd_consume(args: argparse.Namespace) -> int:
    from db.engine import database_url
    from metering.sources import consume

    migrated_engine(args).dispose()
    try:
        return consume.command(args, database_url(args.db))
    except (consume.ConsumerUnavailable, consume.ConsumerConfigError) as exc:
        raise UsageError(str(exc)) from None


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``metering consume`` options; each falls back to an environment variable (docs/consumer.md)."""
    parser = commands.add_parser(
        "consume", help="read the event hub continuously with checkpoints in Blob Storage (containers; see docs/consumer.md)")
    parser.add_argument("--eventhub", metavar="NAME", help="event hub name (EVENTHUB_NAME)")
    parser.add_argument("--namespace", metavar="FQDN",
                        help="<namespace>.servicebus.windows.net, identity auth with DefaultAzureCredential"
                             " (EVENTHUB_NAMESPACE or EVENTHUB_CONNECTION__fullyQualifiedNamespace)")
    parser.add_argument("--connection-string", metavar="CS",
                        help="Event Hubs connection string instead of identity (EVENTHUB_CONNECTION_STRING or EVENTHUB_CONNECTION)")
    parser.add_argument("--consumer-group", metavar="NAME", help="consumer group (EVENTHUB_CONSUMER_GROUP, default $Default)")
    parser.add_argument("--checkpoint-url", metavar="URL",
                        help="blob container for checkpoints and ownership, https://<account>.blob.core.windows.net/<container>"
                             " (identity, or a SAS in the URL) (METERING_CHECKPOINT_URL)")
    parser.add_argument("--checkpoint-connection-string", metavar="CS",
                        help="storage connection string instead (METERING_CHECKPOINT_CONNECTION_STRING)")
    parser.add_argument("--checkpoint-container", metavar="NAME", help="container for --checkpoint-connection-string"
                                                                       " (METERING_CHECKPOINT_CONTAINER)")
    parser.add_argument("--batch-size", type=int, default=300, help="events per batch and transaction (default 300)")
    parser.add_argument("--start", choices=("earliest", "latest"), default="earliest",
                        help="where a partition without a checkpoint starts (default earliest: all retained events;"
                             " replaying is idempotent)")
    parser.set_defaults(handler=cmd_consume)
