"""Post one JSON message to a generic webhook (Teams or Slack incoming webhook, or anything that
accepts JSON) with the standard library, so alerts need no extra dependency.

A post has one deadline for all of it (connect, TLS, sending, the status line, headers and body),
not a timeout per socket read: a receiver that trickles its answer a byte at a time would otherwise
hold the post, and the alert's lease, for as long as it likes. The exchange runs in a helper thread;
at the deadline its socket is shut down, which ends any read it is blocked in.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
from urllib.parse import urlsplit

MAX_ANSWER_BYTES = 64 * 1024  # what is read of an answer: only its status matters


class WebhookError(Exception):
    """The webhook did not accept the message (no answer in time, or a non-2xx status)."""


def describe(url: str) -> str:
    """The webhook without its path and query, which often carry a secret token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def post_json(url: str, body: bytes, timeout: float = 10.0) -> int:
    """POST ``body`` as JSON, all of it within ``timeout`` seconds; the status on 2xx, else
    ``WebhookError`` (the message never shows the URL's path or query)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError(f"{describe(url)}: not an http(s) URL")
    try:
        port = parts.port
    except ValueError:
        raise WebhookError(f"{describe(url)}: not an http(s) URL") from None
    if parts.scheme == "https":
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, port, timeout=timeout, context=ssl.create_default_context())
    else:
        connection = http.client.HTTPConnection(parts.hostname, port, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    outcome: dict[str, object] = {}

    def exchange() -> None:
        try:
            connection.request("POST", target, body=body, headers={
                "Content-Type": "application/json; charset=utf-8", "User-Agent": "aoai-metering"})
            response = connection.getresponse()
            response.read(MAX_ANSWER_BYTES)
            outcome["status"] = int(response.status)
        except BaseException as exc:  # noqa: BLE001 (handed to the caller's thread)
            outcome["error"] = exc

    worker = threading.Thread(target=exchange, name="webhook-post", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        _abort(connection)
        worker.join(1.0)
        raise WebhookError(f"{describe(url)} did not answer within {timeout:g} s")
    connection.close()
    if "error" in outcome:
        exc = outcome["error"]
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise WebhookError(f"{describe(url)} did not answer: {reason}")
    status = int(outcome["status"])  # type: ignore[arg-type]
    if not 200 <= status < 300:
        raise WebhookError(f"{describe(url)} answered HTTP {status}")
    return status


def _abort(connection: http.client.HTTPConnection) -> None:
    """End the exchange now: a read blocked on the socket returns at once."""
    sock = connection.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    connection.close()
