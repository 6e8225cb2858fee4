"""Decode stage: the bytes of one Event Hubs message → a typed ``UsageEvent``.

Accepts the ``aoai-usage/1`` contract (DESIGN.md) and the earlier community format
(``ExecTimeUTC``, ``SubscriptionId``, ``OperationId``, ``Request``, ``ResponseString`` …).
Anything that cannot be decoded raises ``BadEvent`` with a reason; the pipeline quarantines it.
An ``aoai-usage/1`` event cut at APIM's 200 KB limit is decoded from the header fields that survived
(``metering.salvage``) with ``truncated = True``, when its request id, time and subscription did.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from typing import Any

import orjson

from metering.decode import salvage
from metering.model import SCHEMA_V1, BadEvent, UsageEvent
from metering.short_key_cache import short_key_cache
from metering.decode.salvage import valid_utf8_prefix

UTF8_BOM = b"\xef\xbb\xbf"
LEGACY_KEY_PREFIX = "legacy-"

_DEPLOYMENT_IN_URL = re.compile(r"/deployments/([^/?#]+)")
_API_VERSION_IN_URL = re.compile(r"[?&]api-version=([^&#]+)")
# ASCII only (str.isdigit() also accepts "²", which int() rejects, and "٣"); at most 30 digits, far beyond
# any column, and below the length at which int() refuses to convert a string.
_INTEGER_TEXT = re.compile(r"-?[0-9]{1,30}")


# --------------------------------------------------------------------------- bytes → object


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Parse a message body into a JSON object, naming why when it is not one."""
    if body.startswith(UTF8_BOM):
        body = body[len(UTF8_BOM) :]
    if not body.strip():
        raise BadEvent("empty", "the message body is empty")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as utf_exc:
            raise BadEvent("not_utf8", f"the body is not UTF-8 ({utf_exc.reason} at byte {utf_exc.start})") from None
        raise BadEvent("not_json", f"the body is not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise BadEvent("not_object", f"the body is a JSON {type(obj).__name__}, not an object")
    return obj


# --------------------------------------------------------------------------- typed field readers


def integer_text(value: str) -> int | None:
    """The integer a string spells in plain ASCII digits (an optional ``-``, blanks around), else ``None``."""
    text = value.strip()
    return int(text) if _INTEGER_TEXT.fullmatch(text) else None


def _str(obj: dict[str, Any], key: str, *, where: str = "") -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise BadEvent("invalid_field", f"{where}{key} must be a string, got {type(value).__name__}")


def _int(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        raise BadEvent("invalid_field", f"{key} must be a number, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == value and abs(value) < 1e15:
        return round(value)  # APIM's context.Elapsed.TotalMilliseconds is a double
    if isinstance(value, str) and (number := integer_text(value)) is not None:
        return number
    raise BadEvent("invalid_field", f"{key} must be an integer, got {value!r:.40}")


def _bool(obj: dict[str, Any], key: str) -> bool:
    value = obj.get(key)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise BadEvent("invalid_field", f"{key} must be a boolean, got {value!r:.40}")


def _obj(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    raise BadEvent("invalid_field", f"{key} must be an object, got {type(value).__name__}")


def _payload_object(value: Any, key: str) -> Any:
    """A request body: an object, or JSON text of one (older policies sent it as a string)."""
    if value is None or isinstance(value, (dict, list)):
        return value
    if isinstance(value, str):
        try:
            return orjson.loads(value) if value.strip() else None
        except orjson.JSONDecodeError:
            return None  # a request we cannot read only costs us the prompt estimate
    raise BadEvent("invalid_field", f"{key} must be an object, got {type(value).__name__}")


def _payload_text(value: Any, key: str) -> str | None:
    """A response body as text (JSON or SSE); an object is re-serialised."""
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    raise BadEvent("invalid_field", f"{key} must be a string, got {type(value).__name__}")


_LEGACY_TIME_FORMATS = ("%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M:%S", "%d/%m/%Y %H:%M:%S")


def parse_time(value: Any, key: str = "time") -> datetime:
    """An ISO 8601 timestamp (or .NET's invariant ``M/d/yyyy h:mm:ss tt``) as aware UTC."""
    if not isinstance(value, str) or not value.strip():
        raise BadEvent("invalid_field", f"{key} must be an ISO 8601 timestamp, got {value!r:.40}")
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        for fmt in _LEGACY_TIME_FORMATS:
            try:
                moment = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
        else:
            raise BadEvent("invalid_field", f"{key} is not a timestamp: {text!r:.40}") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)  # the gateway writes UTC; a bare time is UTC
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00 is before year 1 in UTC
        raise BadEvent("invalid_field", f"{key} is out of range in UTC: {text!r:.40}") from None


# --------------------------------------------------------------------------- endpoint


_OPERATION_ENDPOINTS = (
    ("chatcompletion", "chat.completions"),
    ("embedding", "embeddings"),
    ("completion", "completions"),
    ("response", "responses"),
    ("image", "images"),
    ("transcription", "audio"),
    ("translation", "audio"),
    ("speech", "audio"),
    ("audio", "audio"),
)

_PATH_ENDPOINTS = (
    ("/chat/completions", "chat.completions"),
    ("/embeddings", "embeddings"),
    ("/completions", "completions"),
    ("/responses", "responses"),
    ("/images/", "images"),
    ("/audio/", "audio"),
)

_OBJECT_ENDPOINTS = {
    "chat.completion": "chat.completions",
    "chat.completion.chunk": "chat.completions",
    "text_completion": "completions",
    "response": "responses",
}


@short_key_cache(maxsize=256)
def _operation_endpoint(operation: str) -> str | None:
    """The API an APIM operation id names (a gateway has a handful: each read once)."""
    key = _NOT_LETTERS.sub("", operation.lower())
    for needle, endpoint in _OPERATION_ENDPOINTS:
        if needle in key:
            return endpoint
    return None


_NOT_LETTERS = re.compile(r"[^a-z]")


def classify_endpoint(operation: str | None, url: str | None, request: Any, response: str | None) -> str:
    """Which API a request used: from the APIM operation id, else the URL, else the payload shapes."""
    if operation and (endpoint := _operation_endpoint(operation)) is not None:
        return endpoint
    if url:
        path = url.split("?", 1)[0].lower()
        for needle, endpoint in _PATH_ENDPOINTS:
            if needle in path or path.endswith(needle.rstrip("/")):
                return endpoint
    if response:
        head = response[:400]
        match = re.search(r'"object"\s*:\s*"([a-z_.]+)"', head)
        if match and match.group(1) in _OBJECT_ENDPOINTS:
            return _OBJECT_ENDPOINTS[match.group(1)]
        if '"object":"chat.completion' in response[:2000]:
            return "chat.completions"  # Azure's first SSE chunk has an empty object; the next one names it
        if '"type":"response.' in head or '"object": "response"' in head:
            return "responses"
        if '"embedding"' in head:
            return "embeddings"
    if isinstance(request, dict):
        if "messages" in request:
            return "chat.completions"
        if "prompt" in request and "size" not in request:
            return "completions"
        if "input" in request and ("instructions" in request or "store" in request or "tools" in request):
            return "responses"
        if "input" in request and "dimensions" in request:
            return "embeddings"
    return "other"


# --------------------------------------------------------------------------- aoai-usage/1


def _decode_v1(obj: dict[str, Any]) -> UsageEvent:
    request_id = obj.get("requestId")
    if request_id is None or request_id == "":
        raise BadEvent("missing_field", "requestId is missing")
    if not isinstance(request_id, str):
        raise BadEvent("invalid_field", f"requestId must be a string, got {type(request_id).__name__}")
    request_id = request_id.strip()
    if not request_id or len(request_id) > 200:
        raise BadEvent("invalid_field", "requestId must be 1 to 200 characters", request_id[:200] or None)
    try:
        if "time" not in obj:
            raise BadEvent("missing_field", "time is missing")
        event_time = parse_time(obj["time"])
        gateway = _obj(obj, "gateway")
        subscription = _obj(obj, "subscription")
        user = _obj(obj, "user")
        backend = _obj(obj, "backend")
        attributes_obj = _obj(obj, "attributes")
        attributes = {str(k): v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in attributes_obj.items()}
        request = _payload_object(obj.get("request"), "request")
        response = _payload_text(obj.get("response"), "response")
        usage = obj.get("usage")
        if usage is not None and not isinstance(usage, dict):
            raise BadEvent("invalid_field", f"usage must be an object, got {type(usage).__name__}")
        operation = _str(obj, "operation")
        url = _str(obj, "url")
        deployment = _str(obj, "deployment")
        if deployment is None and url:
            match = _DEPLOYMENT_IN_URL.search(url)
            deployment = match.group(1) if match else None
        capture = _str(obj, "capture")
        if capture is not None and capture not in ("usage", "request", "full"):
            raise BadEvent("invalid_field", f"capture must be usage, request or full, got {capture!r:.40}")
        return UsageEvent(
            request_id=request_id,
            event_time=event_time,
            subscription_id=_str(subscription, "id", where="subscription."),
            subscription_name=_str(subscription, "name", where="subscription."),
            product=_str(obj, "product"),
            api=_str(obj, "api"),
            operation=operation,
            user_id=_str(user, "id", where="user."),
            user_email=_str(user, "email", where="user."),
            client_ip=_str(obj, "clientIp"),
            attributes=attributes,
            gateway_service=_str(gateway, "service", where="gateway."),
            gateway_region=_str(gateway, "region", where="gateway."),
            backend_id=_str(backend, "id", where="backend."),
            backend_url=_str(backend, "url", where="backend."),
            backend_region=_str(backend, "region", where="backend."),
            deployment=deployment,
            api_version=_str(obj, "apiVersion"),
            status_code=_int(obj, "status"),
            duration_ms=_int(obj, "durationMs"),
            is_streaming=_bool(obj, "stream"),
            capture=capture,
            model=_str(obj, "model"),
            service_tier=_str(obj, "serviceTier"),
            endpoint=classify_endpoint(operation, url, request, response),
            usage=usage,
            request=request,
            response=response,
            schema=SCHEMA_V1,
        )
    except BadEvent as exc:
        exc.request_id = exc.request_id or request_id
        raise


# --------------------------------------------------------------------------- community format


def _ci(obj: dict[str, Any]) -> dict[str, Any]:
    """Case-insensitive view of the community format's keys (captures vary in casing)."""
    return {k.lower(): v for k, v in obj.items()}


def is_legacy(obj: dict[str, Any]) -> bool:
    """True for the earlier community event shape (PascalCase keys such as ``ExecTimeUTC``)."""
    return "schema" not in obj and any(k in obj for k in ("ExecTimeUTC", "SubscriptionId", "ResponseString", "OperationId"))


def legacy_request_id(obj: dict[str, Any]) -> str:
    """A deterministic key for an event that carries no request id: a hash of its content."""
    canonical = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    return LEGACY_KEY_PREFIX + hashlib.sha256(canonical).hexdigest()[:40]


def _decode_legacy(obj: dict[str, Any]) -> UsageEvent:
    fields = _ci(obj)
    # Stripped like v1 ids: SQL Server compares 'x' and 'x ' as equal even under a binary collation.
    request_id = (_str(fields, "requestid") or "").strip() or legacy_request_id(obj)
    try:
        time_value = fields.get("exectimeutc") or fields.get("eventtime") or fields.get("timestamp")
        if time_value is None:
            raise BadEvent("missing_field", "ExecTimeUTC is missing")
        event_time = parse_time(time_value, "ExecTimeUTC")
        request = _payload_object(fields.get("request"), "Request")
        response = _payload_text(fields.get("responsestring") or fields.get("response"), "ResponseString")
        url = _str(fields, "requesturl") or _str(fields, "url")
        operation = _str(fields, "operationid") or _str(fields, "operationname")
        deployment = _str(fields, "deployment") or _str(fields, "deploymentid")
        if deployment is None and url:
            match = _DEPLOYMENT_IN_URL.search(url)
            deployment = match.group(1) if match else None
        api_version = _str(fields, "apiversion")
        if api_version is None and url:
            match = _API_VERSION_IN_URL.search(url)
            api_version = match.group(1) if match else None
        stream = isinstance(request, dict) and request.get("stream") is True
        usage = fields.get("usage") if isinstance(fields.get("usage"), dict) else None
        # Not the request's "model": that is the client's wish; the response names what ran.
        model = _str(fields, "model")
        return UsageEvent(
            request_id=request_id,
            event_time=event_time,
            subscription_id=_str(fields, "subscriptionid"),
            subscription_name=_str(fields, "subscriptionname"),
            product=_str(fields, "productname") or _str(fields, "productid") or _str(fields, "product"),
            api=_str(fields, "apiname") or _str(fields, "apiid") or _str(fields, "api"),
            operation=operation,
            user_id=_str(fields, "userid"),
            user_email=_str(fields, "useremail"),
            client_ip=_str(fields, "requestip") or _str(fields, "clientip"),
            gateway_service=_str(fields, "servicename"),
            gateway_region=_str(fields, "region") or _str(fields, "gatewayregion"),
            backend_id=_str(fields, "backendid"),
            backend_url=_str(fields, "backendurl"),
            backend_region=_str(fields, "backendregion"),
            deployment=deployment,
            api_version=api_version,
            status_code=_int(fields, "statuscode") if "statuscode" in fields else _int(fields, "responsecode"),
            duration_ms=_int(fields, "durationms") if "durationms" in fields else _int(fields, "elapsedms"),
            is_streaming=stream,
            capture="full" if response else ("request" if request else "usage"),
            model=model,
            endpoint=classify_endpoint(operation, url, request, response),
            usage=usage,
            request=request,
            response=response,
            schema="legacy",
        )
    except BadEvent as exc:
        exc.request_id = exc.request_id or request_id
        raise


# --------------------------------------------------------------------------- entry


def decode_object(obj: dict[str, Any]) -> UsageEvent:
    """A parsed JSON object → ``UsageEvent`` (either format)."""
    schema = obj.get("schema")
    if schema == SCHEMA_V1:
        return _decode_v1(obj)
    if schema is None and is_legacy(obj):
        return _decode_legacy(obj)
    if schema is None:
        raise BadEvent("unknown_schema", "the event has no schema field and is not the community format")
    raise BadEvent("unknown_schema", f"unsupported schema {schema!r:.60}")


# What a truncated event must still carry to become a row: its key, its time and who to charge.
TRUNCATED_REQUIRED = ("requestId", "time", "subscription")


def _header_of_lenient_payload(body: bytes) -> dict[str, Any] | None:
    """The header of a whole ``aoai-usage/1`` event whose ``request`` payload is not strict JSON, when
    the header carries the provider's usage; else ``None`` (the event stays ``not_json``).

    The policy checks a request body with JSON.NET, which accepts comments, single quotes, trailing
    commas and ``NaN``, and attaches it raw: the gateway saw valid usage, so it is billed from the
    header (``request`` and ``response`` are dropped; the signature, a suffix of the bytes, is still
    verified on the bytes as sent). Without reported usage there is nothing the header can bill, and
    the bytes stay in quarantine."""
    if body.startswith(UTF8_BOM):
        body = body[len(UTF8_BOM) :]
    if not body.rstrip().endswith(b"}"):
        return None  # not a whole object (a complete event followed by garbage is malformed, not lenient)
    members = salvage.members_before(body, "request")
    if not members or members.get("schema") != SCHEMA_V1 or not isinstance(members.get("usage"), dict):
        return None
    return members


def _salvage_truncated(body: bytes) -> dict[str, Any] | None:
    """The header of an ``aoai-usage/1`` event cut short (APIM's 200 KB limit), as an object to
    decode, or ``None`` when ``body`` is not a cut JSON object. Raises ``BadEvent("truncated")``
    for a cut event whose request id, time or subscription did not survive.

    Complete members are kept as they are; of the member that was cut, only ``response`` is kept
    (the text that survived: a stream cut short still counts the answer tokens it shows).
    """
    if body.startswith(UTF8_BOM):
        body = body[len(UTF8_BOM) :]
    if not valid_utf8_prefix(body):
        return None
    found = salvage.scan(body)
    if found is None:
        return None
    members = found.members
    where = f"inside {found.cut_key!r}" if found.cut_key else "between fields"
    request_id = members.get("requestId") if isinstance(members.get("requestId"), str) else None
    if members.get("schema") != SCHEMA_V1:
        raise BadEvent("truncated", f"a JSON object cut at {len(body):,} bytes ({where}) that is not a readable "
                                    f"{SCHEMA_V1} header", request_id)
    subscription = members.get("subscription")
    lost = [name for name in TRUNCATED_REQUIRED
            if members.get(name) in (None, "") or (name == "subscription" and not (isinstance(subscription, dict) and subscription.get("id")))]
    if lost:
        raise BadEvent("truncated", f"event cut at {len(body):,} bytes ({where}); lost {', '.join(lost)}", request_id)
    if found.cut_key == "response" and found.cut_offset is not None:
        text = salvage.partial_string(body, found.cut_offset)
        if text:
            members["response"] = text
    return members


def decode_event(
    body: bytes,
    *,
    source_partition: str | None = None,
    source_sequence_number: int | None = None,
) -> UsageEvent:
    """Decode one message body; raises ``BadEvent`` (never anything else) for bad input.

    An ``aoai-usage/1`` event cut short (not JSON any more) whose request id, time and subscription
    survived decodes from what survived, with ``truncated = True``.
    """
    truncated = lenient = False
    if not body.rstrip().endswith(b"}"):
        # No JSON object ends here, so no parse can read one: an event cut short is salvaged without
        # first paying for a failed parse of its 200 KB (a fifth of the cost of salvaging it). What
        # is not a cut object gets its reason from the parse (not_json, not_utf8, empty, not_object).
        salvaged = _salvage_truncated(body)
        if salvaged is None:
            obj = parse_json_object(body)  # raises: only a non-object value can parse
        else:
            obj, truncated = salvaged, True
    else:
        try:
            obj = parse_json_object(body)
        except BadEvent as exc:
            obj, truncated, lenient = _unparsed(body, exc)
    event = decode_object(obj)
    event.truncated = truncated
    event.lenient_payload = lenient
    event.source_partition = source_partition
    event.source_sequence_number = source_sequence_number
    return event


def _unparsed(body: bytes, exc: BadEvent) -> tuple[dict[str, Any], bool, bool]:
    """What a body JSON could not read decodes from: a cut event's header (truncated) or a lenient
    payload's (lenient); else ``exc`` is raised."""
    if exc.reason not in ("not_json", "not_utf8"):
        raise exc
    salvaged = _salvage_truncated(body)
    if salvaged is not None:
        return salvaged, True, False
    salvaged = _header_of_lenient_payload(body) if exc.reason == "not_json" else None
    if salvaged is None:
        raise exc
    return salvaged, False, True
