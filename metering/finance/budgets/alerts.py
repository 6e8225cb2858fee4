"""The body a budget alert is posted with, by webhook format. Pure: the stored alert (``{"text",
"summary", "alert": {...fields...}}``, see ``budget_service.due_alerts``) in, JSON bytes out.

* ``text``: the stored message with ``text`` and ``summary`` escaped for Slack (``safe_text.chat_text``:
  no mention, channel ping or link can be formed from a name); Slack incoming webhooks, the retired
  Office 365 connectors and generic receivers read ``text``.
* ``teams``: an Adaptive Card in the envelope that Teams Workflows ("When a Teams webhook request is
  received" → "Post card in a chat or channel") expect, documented by Microsoft in "Send Adaptive
  Cards using an Incoming Webhook":
  https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/add-incoming-webhook
  (Workflows support Adaptive Cards only) and
  https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/connectors-using
  (the envelope: ``type`` "message", ``attachments`` [{``contentType``
  "application/vnd.microsoft.card.adaptive", ``contentUrl`` null, ``content``: the card}]).

Text from data (scope ids, business units, subscription and model names) is never put where Teams
reads Markdown: Teams renders Markdown in ``TextBlock.text`` and in ``Fact.title``/``Fact.value``
(msteams-docs, "Text formatting in cards"), so a name like ``[Approve](https://…)`` would become
a link. Such text goes into ``RichTextBlock`` ``TextRun``s, which Adaptive Cards render literally;
the FactSet holds only values this program formats (money, percentages, dates, enumerations),
escaped all the same. orjson encodes the card, so no value can break out of its JSON string.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from metering.safe_text import chat_text, markdown_literal

WEBHOOK_FORMATS = ("text", "teams")
FORMAT_SETTING = "METERING_BUDGET_WEBHOOK_FORMAT"
CARD_VERSION = "1.4"
MAX_TEXT_CHARS = 2000  # per TextRun: a Teams message is at most 28 KB


def webhook_format(setting: str | None) -> str:
    """The webhook format ``METERING_BUDGET_WEBHOOK_FORMAT`` names (unset or blank: ``text``; any
    case); a ``ValueError`` naming the setting for a value that is not a format."""
    fmt = (setting or "").strip().lower() or "text"
    if fmt not in WEBHOOK_FORMATS:
        raise ValueError(f"{FORMAT_SETTING}={fmt!r} is not one of {', '.join(WEBHOOK_FORMATS)}")
    return fmt


def webhook_body(stored_payload: str, fmt: str) -> bytes:
    """What is POSTed for one stored alert in webhook format ``fmt`` (one of ``WEBHOOK_FORMATS``)."""
    if fmt == "text":
        message = json.loads(stored_payload)
        for field in ("text", "summary"):
            if isinstance(message.get(field), str):
                message[field] = chat_text(message[field])
        return orjson.dumps(message)
    if fmt == "teams":
        return orjson.dumps(teams_message(json.loads(stored_payload)))
    raise ValueError(f"webhook format {fmt!r} is not one of {', '.join(WEBHOOK_FORMATS)}")


def _plain(value: object) -> str:
    """Literal text for a TextRun: one line, bounded."""
    line = " ".join(str(value).split())
    return line if len(line) <= MAX_TEXT_CHARS else line[:MAX_TEXT_CHARS - 1] + "…"


def _run(text: object, **style: str) -> dict[str, Any]:
    return {"type": "RichTextBlock", "inlines": [{"type": "TextRun", "text": _plain(text), **style}]}


def teams_message(message: dict[str, Any]) -> dict[str, Any]:
    """The Teams Workflows message (Adaptive Card) for one stored alert."""
    alert = message.get("alert") or {}
    if alert.get("type") == "budget_threshold":
        title = (f"Budget {alert.get('scope')} {alert.get('scope_id')}: {alert.get('threshold')}% threshold "
                 f"crossed in {alert.get('month')}")
        facts = [("Month", alert.get("month")), ("Threshold", f"{alert.get('threshold')}%"),
                 ("Spent", f"{alert.get('spent')} {alert.get('currency')} ({alert.get('percent')}%)"),
                 ("Budget", f"{alert.get('amount')} {alert.get('currency')}"),
                 ("Forecast", f"{alert.get('forecast')} {alert.get('currency')}"),
                 ("Status", alert.get("status")), ("Action", alert.get("action")),
                 ("Scope", str(alert.get("scope")).replace("_", " "))]
    elif alert.get("type") == "spend_anomaly":
        title = f"Spend anomaly: {alert.get('kind')} {alert.get('key')} on {alert.get('day')}"
        facts = [("Day", alert.get("day")), ("Spend", f"{alert.get('spend')} {alert.get('currency')}"),
                 ("Threshold", f"{alert.get('threshold')} {alert.get('currency')}"),
                 ("Baseline median", f"{alert.get('baseline_median')} {alert.get('currency')}"),
                 ("Kind", alert.get("kind"))]
    else:
        title, facts = "Budget alert", []
    body: list[dict[str, Any]] = [_run(title, weight="Bolder", size="Medium"), _run(message.get("text", ""))]
    if facts:
        body.append({"type": "FactSet",
                     "facts": [{"title": markdown_literal(name), "value": markdown_literal(value)} for name, value in facts]})
    card = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
            "version": CARD_VERSION, "body": body}
    return {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
                             "content": card}]}
