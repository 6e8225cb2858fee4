"""Azure Function: Event Hubs batch → decode → usage → price → idempotent SQL rows.

Settings (application settings, or ``local.settings.json`` locally):

  METERING_DATABASE_URL     SQLAlchemy URL, e.g. Azure SQL with the Function App's managed identity:
                            mssql+pyodbc://@<server>.database.windows.net/<db>?driver=ODBC+Driver+18+for+SQL+Server&Authentication=ActiveDirectoryMsi&Encrypt=yes
  EVENTHUB_NAME             the hub the APIM logger writes to
  EVENTHUB_CONNECTION       the connection's setting prefix; identity-based: set
                            EVENTHUB_CONNECTION__fullyQualifiedNamespace = <ns>.servicebus.windows.net
                            (and __clientId for a user-assigned identity) instead of a connection string
  EVENTHUB_CONSUMER_GROUP   consumer group, required: the trigger reads ``%EVENTHUB_CONSUMER_GROUP%`` and an unset
                            setting does not resolve (no default); use a dedicated group, e.g. ``metering``
  METERING_RATE_CARD_TTL_SECONDS  how soon a new rate card is picked up (default 60)
  METERING_SIGNING_SECRET   optional: the APIM named value aoai-metering-hmac-key (ideally a Key Vault
                            reference); events must then carry a valid ``signature`` or are quarantined
                            as ``bad_signature``. METERING_SIGNING_SECRET_PREVIOUS is accepted too while
                            rotating; METERING_REQUIRE_SIGNATURE=0 accepts unsigned events (rollout).
                            A configuration that asks for signatures but cannot verify them (only the
                            previous key, or METERING_REQUIRE_SIGNATURE=1 with no key) refuses to start.
  METERING_TRUST_LLM_LOGS   1: LLM-log envelopes reach this hub by a route only the diagnostic setting
                            can write, so they may fill rows while signatures are on (docs/security.md)
  METERING_MAX_EVENT_AGE_DAYS, METERING_MAX_EVENT_FUTURE_MINUTES  the accepted event-time window
                            (default 3660 days back, 1440 minutes ahead); other times are invalid_field
  METERING_QUARANTINE_REDACT  1: quarantine keeps event bytes without the request/response payloads
  METERING_MAX_EVENT_BYTES  the longest event body decoded (default 1 MiB, as ``metering replay``); a longer
                            one is quarantined as ``oversized`` with its first 4 KiB, size and digest
  METERING_BUDGET_WEBHOOK_URL  optional: the Teams/Slack/generic webhook the timer function ``budget_check``
                            posts budget alerts to (ideally a Key Vault reference: the URL is a secret);
                            unset, the timer does nothing
  METERING_BUDGET_WEBHOOK_FORMAT  ``text`` (default: Slack, generic JSON) or ``teams`` (an Adaptive Card
                            for a Teams Workflows webhook); another value: the timer posts nothing
  METERING_BUDGET_CHECK_SCHEDULE  NCRONTAB schedule of ``budget_check`` (default ``0 */5 * * * *``, every
                            five minutes); read when the host indexes the functions

Delivery and failure semantics — nothing lost, nothing counted twice:

* Event Hubs delivers at least once, and the trigger advances its checkpoint after the function
  returns *or throws*. So bad input never throws: it becomes a ``quarantine`` row with its bytes
  (an event cut at APIM's 200 KB limit still becomes a row from its header, ``truncated = true``,
  and its bytes are kept in ``quarantine`` for audit, already resolved).
* A batch is stored in one transaction, keyed by ``request_id`` (usage rows) and by the SHA-256 of
  the bytes (quarantine rows): a redelivered batch inserts nothing twice, and concurrent instances
  writing overlapping batches (a partition moving between hosts) take their locks in one order.
* A write conflict with another instance (deadlock victim, serialization failure, SQL Server
  duplicate key 2601/2627, SQLite busy) is retried inside the invocation, a few times with a short
  pause (``Ingestor``). Any other storage failure (database down, timeout, full) rolls the
  transaction back — nothing of the batch is written — and raises.
* The retry policy below then re-runs the *same* batch with exponential backoff (5 s doubling to
  5 min) and ``max_retry_count = -1``: it retries until the database is back, holding this
  partition's checkpoint, so lag grows but nothing is skipped. Retries live in the host's memory;
  if the host restarts meanwhile, the checkpoint was not advanced and Event Hubs redelivers the
  batch (possibly to another instance), which stores it exactly once.
* If you configure a finite retry count and it runs out, the host logs the failure and the
  checkpoint moves past the batch: its events are *not* in the database and nothing in it says
  so. They are still in the hub for its retention period (1 to 7 days on Standard) and in Event
  Hubs Capture (if enabled): recover them with ``metering replay <capture folder>``, which is
  idempotent, so replaying more than the missing window is safe. Alert on the function's failures
  if you do this.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import unicodedata
from datetime import datetime, timezone
from typing import Any

import azure.functions as func
from sqlalchemy.engine import Engine

from db.engine import make_engine
from metering.finance.budgets.alerts import FORMAT_SETTING, webhook_format
from metering.finance.budgets.service import check as check_budgets
from metering.finance.budgets.service import gateway_status
from metering.ingest import IngestTotals, Ingestor, freeze_startup_heap
from metering.settings import rate_card_ttl_from_env, settings_from_env
from metering.sources.bounds import bounded_event, max_event_bytes_from_env
from metering.model import PipelineSettings, RawEvent

app = func.FunctionApp()
log = logging.getLogger("metering.function")


class ConfigurationError(RuntimeError):
    """The application settings cannot be honoured (e.g. signatures asked for without a key): the
    Function refuses to start rather than store events it was told to verify."""


# Set by the Functions host (locally by ``func start`` from local.settings.json, in Azure by the platform):
# their presence means this module was imported to serve events, not by a test or a script.
HOST_MARKERS = ("FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsScriptRoot", "WEBSITE_INSTANCE_ID")


def under_functions_host() -> bool:
    return any(os.environ.get(name) for name in HOST_MARKERS)


def check_settings(*, serving: bool | None = None) -> tuple[float, PipelineSettings]:
    """The rate card's cache time and the pipeline settings (``METERING_MAX_EVENT_BYTES`` is checked
    too); a bad setting raises ``ConfigurationError`` with one line naming it. Called at import, so that the host then indexes
    no function, and no event is consumed or checkpointed. When serving events (under the host, or
    when an ingestor is built) ``METERING_DATABASE_URL`` is required: the CLI's local SQLite default
    would create ``metering.db`` in the app's folder and fail every batch on its missing tables."""
    serving = under_functions_host() if serving is None else serving
    if serving and not (os.environ.get("METERING_DATABASE_URL") or "").strip():
        raise ConfigurationError("metering Function refuses to start: METERING_DATABASE_URL is not set "
                                 "(the SQLAlchemy URL of the metering database)")
    try:
        max_event_bytes_from_env()
        return rate_card_ttl_from_env(), settings_from_env()
    except ValueError as exc:
        raise ConfigurationError(f"metering Function refuses to start: {exc}") from None


check_settings()

# One engine (and connection pool) and one rate-card cache per worker process, reused across
# invocations; created on first use so that importing this module needs no settings.
_ingestor: Ingestor | None = None
_ingestor_lock = threading.Lock()


def get_ingestor() -> Ingestor:
    """The process-wide ingestor (engine + cached rate card)."""
    global _ingestor
    if _ingestor is None:
        with _ingestor_lock:
            if _ingestor is None:
                ttl, settings = check_settings(serving=True)
                engine: Engine = make_engine(os.environ["METERING_DATABASE_URL"])
                _ingestor = Ingestor(engine, rate_card_ttl=ttl, settings=settings)
                freeze_startup_heap()
    return _ingestor


def reset_ingestor() -> None:
    """Forget the process-wide ingestor and the budget endpoint's engine (tests, or after changing settings)."""
    global _ingestor, _budget_engine
    with _ingestor_lock:
        if _ingestor is not None:
            _ingestor.engine.dispose()
        _ingestor = None
    with _budget_lock:
        if _budget_engine is not None:
            _budget_engine.dispose()
        _budget_engine = None


def to_raw_event(event: func.EventHubEvent, max_event_bytes: int | None = None) -> RawEvent:
    """The trigger's event as the pipeline's ``RawEvent`` (body bytes plus where it came from); a
    body longer than ``max_event_bytes`` (default ``METERING_MAX_EVENT_BYTES``) becomes the
    ``oversized`` stand-in, as in ``metering replay``."""
    metadata = event.metadata or {}
    partition = metadata.get("PartitionContext", {}).get("PartitionId") if isinstance(metadata.get("PartitionContext"), dict) else None
    raw = RawEvent(
        body=event.get_body() or b"",
        source_partition=str(partition) if partition is not None else None,
        source_sequence_number=event.sequence_number,
        enqueued_time=event.enqueued_time,
    )
    return bounded_event(raw, max_event_bytes or max_event_bytes_from_env())


def handle_events(events: list[func.EventHubEvent]) -> IngestTotals:
    """Process and store one trigger batch. Raises only when storage fails (so the batch retries)."""
    ingestor = get_ingestor()
    bound = max_event_bytes_from_env()
    raws = [to_raw_event(event, bound) for event in events]
    totals = ingestor.ingest(raws)
    log.info(
        "metering batch: read=%d inserted=%d duplicates=%d conflicting=%d quarantined=%d truncated=%d"
        " llm_merged=%d llm_pending=%d llm_refused=%d llm_ignored=%d tokens=%d",
        totals.read, totals.inserted, totals.duplicates, totals.conflicting, totals.quarantined, totals.truncated,
        totals.merged, totals.pending, totals.llm_refused, totals.ignored, totals.tokens,
    )
    if totals.conflicting:
        log.warning("metering batch: %d event(s) reused a stored request id with different content; kept in "
                    "quarantine as conflicting_duplicate (the first stored counts)", totals.conflicting)
    return totals


@app.function_name(name="meter_usage")
@app.event_hub_message_trigger(
    arg_name="events",
    event_hub_name="%EVENTHUB_NAME%",
    connection="EVENTHUB_CONNECTION",
    consumer_group="%EVENTHUB_CONSUMER_GROUP%",
    cardinality=func.Cardinality.MANY,
    data_type=func.DataType.BINARY,
)
@app.retry(strategy="exponential_backoff", max_retry_count="-1", minimum_interval="00:00:05", maximum_interval="00:05:00")
def meter_usage(events: list[func.EventHubEvent]) -> None:
    """Event Hubs trigger (cardinality many): one transaction per batch."""
    handle_events(events)


# ---------------------------------------------------------------------------------------- budgets
#
# ``GET /api/budget/{subscriptionId}`` (function key) answers the APIM fragment ``aoai-budget``
# (policy/budget.xml) from SQL: one indexed read of the current month of the subscription (or of
# its business unit's / cost center's subscriptions). ``budget_check`` posts budget alerts on a
# schedule, exactly as ``metering budgets check`` does.

BUDGET_CHECK_SCHEDULE = os.environ.get("METERING_BUDGET_CHECK_SCHEDULE") or "0 */5 * * * *"


def _json(body: dict[str, object], status: int) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json",
                             headers={"Cache-Control": "no-store"})


# The gateway waits aoai-budget-timeout-seconds (2 s by default) and then fails open; the endpoint
# answers within less, whatever the database does: its own small pool with connect, statement and
# pool-wait timeouts, and the lookup in a bounded set of threads so a hung connection holds none of
# the host's request threads.
BUDGET_DEADLINE_SECONDS = 1.5
_budget_engine: Engine | None = None
_budget_threads: Any = None
_budget_lock = threading.Lock()


def budget_lookup() -> tuple[Engine, Any]:
    """The budget endpoint's engine and thread pool, made on first use."""
    global _budget_engine, _budget_threads
    if _budget_engine is None:
        with _budget_lock:
            if _budget_engine is None:
                from concurrent.futures import ThreadPoolExecutor

                from db.engine import deadline_options

                check_settings(serving=True)
                url = os.environ["METERING_DATABASE_URL"]
                _budget_threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="budget")
                _budget_engine = make_engine(url, pool_size=2, max_overflow=2,
                                             **deadline_options(url, BUDGET_DEADLINE_SECONDS))
    return _budget_engine, _budget_threads


def _readable_id(value: str) -> bool:
    """An id a subscription can have: no control characters (NUL), no lone surrogates."""
    return all(unicodedata.category(ch) not in ("Cc", "Cs") for ch in value)


def answer_budget(req: func.HttpRequest, now: datetime | None = None,
                  deadline: float = BUDGET_DEADLINE_SECONDS) -> func.HttpResponse:
    """``{"subscription_id", "status": "ok"|"warn"|"blocked", "spent", "limit", "currency",
    "forecast", "period", "budget", "until"}``; 503 when the database does not answer within
    ``deadline`` seconds (the gateway then fails open)."""
    from concurrent.futures import TimeoutError as DeadlinePassed

    subscription_id = (req.route_params.get("subscriptionId") or "").strip()
    if not subscription_id or len(subscription_id) > 200 or not _readable_id(subscription_id):
        return _json({"error": "subscriptionId is required (at most 200 printable characters)"}, 400)

    def lookup() -> Any:
        with engine.connect() as conn:
            return gateway_status(conn, subscription_id, now or datetime.now(timezone.utc))

    try:
        engine, threads = budget_lookup()
        answer = threads.submit(lookup).result(timeout=deadline)
    except DeadlinePassed:
        log.warning("budget status: the database did not answer within %.1f s", deadline)
        return _json({"error": "budget status unavailable"}, 503)
    except Exception as exc:  # the gateway fails open on any non-200; one line in the log, no event data
        log.warning("budget status unavailable: %s", type(exc).__name__)
        return _json({"error": "budget status unavailable"}, 503)
    return _json(answer.as_dict(), 200)


@app.function_name(name="budget_status")
@app.route(route="budget/{subscriptionId}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def budget_status(req: func.HttpRequest) -> func.HttpResponse:
    """HTTP trigger for the APIM fragment aoai-budget."""
    return answer_budget(req)


def run_budget_check(now: datetime | None = None) -> None:
    """Post the budget alerts that are due; does nothing without METERING_BUDGET_WEBHOOK_URL."""
    url = os.environ.get("METERING_BUDGET_WEBHOOK_URL")
    if not url:
        log.info("budget check skipped: METERING_BUDGET_WEBHOOK_URL is not set")
        return
    try:
        fmt = webhook_format(os.environ.get(FORMAT_SETTING))
    except ValueError as exc:
        log.error("budget check skipped: %s", exc)
        return
    result = check_budgets(get_ingestor().engine, url, now=now, webhook_format=fmt)
    log.info("budget check: new=%d sent=%d pending=%d", result.new, result.sent, result.pending)
    for error in result.errors:
        log.warning("budget alert not delivered (pending for the next run): %s", error)


@app.function_name(name="budget_check")
@app.timer_trigger(arg_name="timer", schedule=BUDGET_CHECK_SCHEDULE, run_on_startup=False, use_monitor=True)
def budget_check(timer: func.TimerRequest) -> None:
    """Timer trigger: the scheduled ``metering budgets check``."""
    run_budget_check()
