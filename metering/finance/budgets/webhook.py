"""Post one JSON message to a generic webhook (Teams or Slack incoming webhook, or anything that
accepts JSON) with the standard library, so alerts need no extra dependency."""

from __future__ import annotations

import urllib.error
import urllib.request
from urllib.parse import urlsplit


class WebhookError(Exception):
    """The webhook did not accept the message (no answer, or a non-2xx status)."""


def describe(url: str) -> str:
    """The webhook without its path and query, which often carry a secret token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def post_json(url: str, body: bytes, timeout: float = 10.0) -> int:
    """POST ``body`` as JSON; the status on 2xx, else ``WebhookError`` (the message never shows the
    URL's path or query)."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise WebhookError(f"{describe(url)}: not an http(s) URL")
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json; charset=utf-8"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) checked above)
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        raise WebhookError(f"{describe(url)} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WebhookError(f"{describe(url)} did not answer: {reason}") from None
