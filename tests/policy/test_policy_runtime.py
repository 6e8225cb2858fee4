"""The APIM policies, compiled and run: every C# expression in ``policy/*.xml`` is compiled with Mono's
C# 7 compiler against the documented ``context`` interfaces only, checked against APIM's allow-list of
.NET types, and executed through the gateway sequence (inbound → backend with retries → outbound,
on-error when a policy fails) on realistic Azure OpenAI traffic. Each event the gateway emits is
validated against ``policy/usage-event.schema.json``, cut at Event Hubs' 200 KB as APIM does, and
stored by the real pipeline (``Ingestor`` into a migrated SQLite database), and the rows finance
will see are asserted. ``tests/policy_runtime/runtime.py`` explains the machinery.

Without Mono these tests skip with the reason; ``METERING_REQUIRE_MONO=1`` (set by ``.ci/run``)
turns that into a failure.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from jsonschema import Draft202012Validator

from azure_shapes import (
    annotation_chunk,
    chat_body,
    chat_chunk,
    chat_stream_payloads,
    content_choice,
    content_filter_error_body,
    dumps,
    responses_stream,
    responses_usage,
    sample_words,
    sse,
    usage_object,
)
from db.schema import quarantine, usage_records
from db.rate_card import replace_deployments, replace_rates
from metering.ingest import Ingestor
from metering.price.mappings import parse_deployments_csv
from metering.model import PipelineSettings, RawEvent
from metering.price.rate_card import parse_rates_csv
from metering.usage.sse import rebuild_stream
from policy_runtime.runtime import (
    CompileError,
    PolicyRuntime,
    compose,
    documented_named_values,
    expressions_in_files,
    require_mono,
    toolchain_problem,
)
from shared_folder import APIM_ALLOWED_TYPES, needs

ALLOW_LIST = needs(APIM_ALLOWED_TYPES)  # APIM's allow-list table, read from the shared folder
ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Draft202012Validator(json.loads((ROOT / "policy" / "usage-event.schema.json").read_text()))
EVENT_HUB_LIMIT = 200 * 1024  # log-to-eventhub cuts a message above 200 KB
HMAC_KEY = "kV3q9y2Lr8XcT1pWm6ZsB0nHf4JdG7aE5uQx2NbR8tYc1LmP9wKs3Dv6Hj0Fg4Ze"

BASE_VALUES = documented_named_values() | {
    "aoai-metering-attributes": "header:x-cost-center,header:api-key,claim:oid=caller_oid",
    "aoai-metering-inject-include-usage": "true",
}
PROFILES = {
    "usage": BASE_VALUES | {"aoai-metering-capture": "usage"},
    "request": BASE_VALUES | {"aoai-metering-capture": "request"},
    "full": BASE_VALUES | {"aoai-metering-capture": "full", "aoai-metering-hmac-key": HMAC_KEY},
}
SIGNED = PipelineSettings(signing_secret=HMAC_KEY.encode())


def settings(profile: str) -> PipelineSettings:
    """The pipeline as deployed next to the profile's gateway: it verifies signatures where the policy signs."""
    return SIGNED if PROFILES[profile]["aoai-metering-hmac-key"] != "none" else PipelineSettings()

GATEWAY = "https://apim-contoso-aoai.azure-api.net"
PTU = "aoai-swc-ptu.openai.azure.com"
SPILLOVER = "aoai-swc-paygo-1.openai.azure.com"
SUBSCRIPTION = {"id": "sub-customer-care-bot", "name": "Customer care bot"}
CHAT_PATH = "/openai/deployments/chat-prod/chat/completions"
SUBSCRIPTION_KEY = "5e4b2f0c9a8d4c17b3e6a1f27d90c4e8"
CALLER_OID = "9a1f6c3e-2b7d-4e58-a0c4-71d3e6f2b915"


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> PolicyRuntime:
    """The compiled gateway, one assembly per capture profile, built once per session (in parallel)."""
    problem = toolchain_problem()
    if problem:
        if require_mono():
            pytest.fail(f"METERING_REQUIRE_MONO=1 but the policy runtime cannot run: {problem}")
        pytest.skip(f"policy runtime needs Mono: {problem}")
    runtime = PolicyRuntime(tmp_path_factory.mktemp("policy-runtime"))
    with ThreadPoolExecutor(max_workers=len(PROFILES)) as pool:
        list(pool.map(runtime.build, PROFILES.values()))
    return runtime


# ---- scenario builders ----------------------------------------------------------------------------

def backend(status: int, body: str | None, *, host: str = PTU, content_type: str = "application/json",
            headers: dict[str, str] | None = None) -> dict[str, Any]:
    """One Azure OpenAI response, as a pool member sends it."""
    return {"host": host, "status": status, "body": body,
            "headers": {"Content-Type": content_type, "x-ms-region": "Sweden Central",
                        "apim-request-id": "0f5c2a4e-9d1b-4c3e-8f7a-6b2d1e0c9a85", **(headers or {})}}


def sse_response(stream: str, **kwargs: Any) -> dict[str, Any]:
    return backend(200, stream, content_type="text/event-stream; charset=utf-8", **kwargs)


def scenario(request_id: str, body: dict[str, Any] | str | None, responses: list[dict[str, Any]], *,
             path: str = CHAT_PATH, query: str = "", headers: dict[str, str] | None = None,
             reject: dict[str, Any] | None = None, jwt_claims: dict[str, str] | None = None) -> dict[str, Any]:
    """One caller request through the gateway: what the caller sent and what the backends answer."""
    matched = {}
    if "/deployments/" in path:
        matched["deployment-id"] = path.split("/deployments/")[1].split("/")[0]
    text = body if isinstance(body, str) or body is None else dumps(body)
    # operation ids of the imported Azure OpenAI API definitions (dated and v1)
    operation = next(op for suffix, op in (("/chat/completions", "ChatCompletions_Create"), ("/embeddings", "Embeddings_Create"),
                                            ("/responses", "createResponse"), ("/audio/speech", "createSpeech"))
                     if path.endswith(suffix))
    return {
        "requestId": request_id,
        "timestamp": "2026-10-21T07:15:30.250Z",
        "elapsedMs": 2345,
        "gateway": {"service": "apim-contoso-aoai", "region": "Sweden Central"},
        "subscription": SUBSCRIPTION,
        "product": "ai-standard",
        "api": "azure-openai",
        "operation": operation,
        "user": {"id": "1", "email": "care-bot-owner@contoso.com"},
        "request": {
            "method": "POST",
            "url": GATEWAY + path + (f"?{query}" if query else ""),
            "ip": "203.0.113.7",
            "headers": {"Content-Type": "application/json", "api-key": SUBSCRIPTION_KEY,
                        "x-cost-center": "CC-4711", **(headers or {})},
            "matchedParameters": matched,
            "body": text,
        },
        "backend": responses,
        "reject": reject,
        "jwtClaims": jwt_claims,
    }


def run(gateway: PolicyRuntime, profile: str, *scenarios: dict[str, Any]) -> list[dict[str, Any]]:
    """Run scenarios; each result must show no failed expression and schema-valid, complete events."""
    results = gateway.run(PROFILES[profile], list(scenarios))
    for result in results:
        assert result["expressionErrors"] == [], result["expressionErrors"]
        for event in result["events"]:
            assert event["loggerId"] == BASE_VALUES["aoai-metering-logger-id"]
            message = json.loads(event["message"])
            errors = [e.message for e in SCHEMA.iter_errors(message)]
            assert errors == [], errors
            assert "gateway" in message, "the policy fell back to its minimal event: an expression failed"
            assert event["partitionKey"] == message["requestId"]
    return results


def event(result: dict[str, Any]) -> dict[str, Any]:
    """The one event a request produced."""
    assert len(result["events"]) == 1, result["events"]
    return json.loads(result["events"][0]["message"])


def on_the_wire(result: dict[str, Any]) -> list[bytes]:
    """The messages as Event Hubs stores them: UTF-8, cut at APIM's 200 KB log-to-eventhub limit."""
    return [e["message"].encode()[:EVENT_HUB_LIMIT] for e in result["events"]]


@pytest.fixture
def store(sqlite_engine: sa.Engine):
    """Feed gateway output through the real pipeline into SQLite (the sample rate card loaded) and
    return the stored rows by request id."""
    with sqlite_engine.begin() as conn:
        replace_rates(conn, parse_rates_csv((ROOT / "samples" / "rates.csv").read_text(), source="samples/rates.csv"))
        # what the platform team imports with `metering deployments import`: an error body names no model
        replace_deployments(conn, parse_deployments_csv(
            "backend_id,deployment,model,deployment_type\n,chat-prod,gpt-4o,global\n,embed-small,text-embedding-3-small,global\n"))

    def ingest(results: list[dict[str, Any]], settings: PipelineSettings | None = None) -> dict[str, dict[str, Any]]:
        raws = [RawEvent(body, source_partition="0") for r in results for body in on_the_wire(r)]
        totals = Ingestor(sqlite_engine, settings=settings or PipelineSettings()).ingest(raws)
        assert totals.quarantined == 0, totals.summary()
        with sqlite_engine.connect() as conn:
            rows = conn.execute(sa.select(usage_records)).mappings().all()
        return {row["request_id"]: dict(row) for row in rows}

    return ingest


def cost(prompt: int, completion: int, input_rate: str, output_rate: str, cached: int = 0, cached_rate: str = "0") -> Decimal:
    per = Decimal(1_000_000)
    return ((prompt - cached) * Decimal(input_rate) + cached * Decimal(cached_rate) + completion * Decimal(output_rate)) / per


CHAT_REQUEST = {
    "messages": [
        {"role": "system", "content": "You are the Contoso customer care assistant."},
        {"role": "user", "content": "When does my parcel 7741-2209 arrive?"},
    ],
    "max_tokens": 400,
    "temperature": 0.2,
}


# ---- compile and allow-list -------------------------------------------------------------------------

def test_every_policy_expression_compiles_against_the_documented_context(gateway: PolicyRuntime):
    """All of policy/*.xml's expressions (entities decoded, named values in) are in the build."""
    in_files = expressions_in_files()
    assert len(in_files) == 30  # budget.xml uses one cache key expression twice
    assert {e.code for e in compose(documented_named_values()).expressions} == set(in_files)
    for values in PROFILES.values():
        assert len({e.code for e in compose(values).expressions}) == 29
        assert gateway.build(values).is_file()


@ALLOW_LIST
@pytest.mark.parametrize("profile", list(PROFILES))
def test_expressions_use_only_types_and_members_apim_allows(gateway: PolicyRuntime, profile: str):
    check = gateway.allow_list_check(PROFILES[profile])
    assert check["violations"] == []
    # the scan saw the real code: JSON.NET, regular expressions, HMAC, the documented context
    referenced = set(check["referenced"])
    assert {"Newtonsoft.Json.Linq.JObject::Parse", "System.Text.RegularExpressions.Regex::Match",
            "System.Security.Cryptography.HashAlgorithm::ComputeHash",
            "System.Collections.Generic.IReadOnlyDictionary::TryGetValue"} <= referenced


def test_self_test_an_undocumented_context_member_does_not_compile(gateway: PolicyRuntime):
    planted = ("        // planted: undocumented context member\n"
               "        public static object Planted(IProxyRequestContext context) { return context.Deployment.SubscriptionId; }\n")
    with pytest.raises(CompileError) as caught:
        gateway.build(PROFILES["usage"], extra=planted)
    assert "SubscriptionId" in str(caught.value) and "planted: undocumented context member" in str(caught.value)


@ALLOW_LIST
def test_self_test_types_outside_the_allow_list_are_reported(gateway: PolicyRuntime):
    """JsonSerializerSettings/DateParseHandling (the usual fix for JSON.NET's date parsing) and file
    access compile with Mono but APIM refuses them; the check must say so."""
    planted = ("        // planted: disallowed types\n"
               "        public static object Planted(IProxyRequestContext context) {\n"
               "            var settings = new JsonSerializerSettings { DateParseHandling = DateParseHandling.None };\n"
               "            return JsonConvert.DeserializeObject<JObject>(\"{}\", settings).ToString() + System.IO.File.ReadAllText(\"/etc/hostname\") + Regex.Escape(\"a.b\");\n"
               "        }\n")
    violations = gateway.allow_list_check(PROFILES["usage"], extra=planted)["violations"]
    assert any("Newtonsoft.Json.JsonSerializerSettings" in v for v in violations)
    assert any("System.IO.File" in v for v in violations)
    assert "member System.Text.RegularExpressions.Regex::Escape (Planted)" in violations
    assert all("(Planted" in v for v in violations), violations


# ---- scenarios --------------------------------------------------------------------------------------

def test_non_streamed_chat_is_one_priced_row_in_every_capture_mode(gateway: PolicyRuntime, store):
    body = chat_body("Your parcel 7741-2209 arrives tomorrow before noon.", usage=usage_object(41, 12, cached=0))
    rows = {}
    for i, profile in enumerate(PROFILES):
        request_id = f"5b0e6a52-3f0d-4a8e-9c1b-00000000000{i}"
        result = run(gateway, profile, scenario(request_id, CHAT_REQUEST, [backend(200, body)],
                                                jwt_claims={"oid": CALLER_OID, "azp": "care-bot-app"},
                                                headers={"Authorization": "Bearer eyJ0eXAiOiJKV1Qi.e30.sig"}))[0]
        sent = event(result)
        assert sent["time"] == "2026-10-21T07:15:30.250Z"
        assert sent["subscription"] == SUBSCRIPTION and sent["product"] == "ai-standard"
        assert sent["deployment"] == "chat-prod" and sent["apiVersion"] == "2024-10-21"   # the gateway's default
        assert sent["backend"] == {"id": "aoai-swc-ptu", "url": f"https://{PTU}", "region": "Sweden Central"}
        assert sent["status"] == 200 and sent["stream"] is False and sent["durationMs"] == 2345
        assert sent["model"] == "gpt-4o-2024-11-20" and sent["usage"]["prompt_tokens"] == 41
        # allow-listed header and renamed claim; the subscription key never, even when listed
        assert sent["attributes"] == {"x-cost-center": "CC-4711", "caller_oid": CALLER_OID}
        assert sent["request"] == (None if profile == "usage" else CHAT_REQUEST)
        assert sent["response"] == (body if profile == "full" else None)
        assert ("signature" in sent) == (profile == "full")
        # what Azure OpenAI got: the managed identity, no caller credentials, the default api-version
        (forwarded,) = result["forwarded"]
        assert forwarded["url"] == f"https://{PTU}{CHAT_PATH}?api-version=2024-10-21"
        assert "api-key" not in forwarded["headers"] and "Ocp-Apim-Subscription-Key" not in forwarded["headers"]
        assert forwarded["headers"]["Authorization"].startswith("Bearer <managed identity token")
        assert json.loads(forwarded["body"]) == CHAT_REQUEST
        # the caller gets the body untouched (read with preserveContent)
        assert result["response"]["status"] == 200 and result["response"]["body"] == body
        rows[profile] = store([result], settings(profile))[request_id]
    for row in rows.values():
        assert (row["prompt_tokens"], row["completion_tokens"], row["usage_source"]) == (41, 12, "reported")
        assert row["price_status"] == "priced" and row["backend_id"] == "aoai-swc-ptu"
        assert Decimal(row["total_cost"]) == cost(41, 12, "2.50", "10.00")


def azure_stream(pieces: list[str], prompt: int, completion: int, cached: int = 0) -> str:
    """Azure's real shape: prompt_filter_results chunk with empty choices, content-filter results on
    every chunk, an asynchronous annotation chunk, ``"usage": null`` on each chunk, the usage chunk."""
    payloads = chat_stream_payloads(pieces, usage=usage_object(prompt, completion, cached=cached))
    payloads.insert(4, annotation_chunk(0, 12))
    return sse(payloads)


def test_azure_stream_gets_include_usage_and_its_usage_chunk_is_billed(gateway: PolicyRuntime, store):
    pieces = sample_words(60)
    stream_request = CHAT_REQUEST | {"stream": True}
    results = {}
    for profile in ("usage", "full"):
        request_id = "7c41d2e0-8b6a-4f3c-9e15-2a0d6c8b4f1" + str(len(results))
        result = run(gateway, profile, scenario(request_id, stream_request, [sse_response(azure_stream(pieces, 1300, 60, cached=1024))]))[0]
        forwarded = json.loads(result["forwarded"][0]["body"])
        assert forwarded["stream_options"] == {"include_usage": True}   # injected for the backend
        sent = event(result)
        assert sent["stream"] is True and sent["model"] == "gpt-4o-2024-11-20"
        assert sent["usage"]["prompt_tokens"] == 1300 and sent["usage"]["prompt_tokens_details"]["cached_tokens"] == 1024
        if profile == "full":
            assert sent["request"] == stream_request                        # what the caller sent
            rebuilt = rebuild_stream(sent["response"])
            assert rebuilt.choices[0].text == "".join(pieces) and rebuilt.usage == sent["usage"]
            assert "content_filter_results" not in sent["response"] and "prompt_filter_results" not in sent["response"]
        results[request_id] = store([result], settings(profile))[request_id]
    for row in results.values():
        assert (row["prompt_tokens"], row["cached_tokens"], row["completion_tokens"]) == (1300, 1024, 60)
        assert row["is_streaming"] and row["usage_source"] == "reported"
        assert Decimal(row["total_cost"]) == cost(1300, 60, "2.50", "10.00", cached=1024, cached_rate="1.25")


def test_answer_text_that_looks_like_a_date_reaches_the_event_exactly(gateway: PolicyRuntime, store):
    """JSON.NET turns date-like strings into DateTime when it parses a chunk; the compacted stream
    must still carry exactly what the model said."""
    said = "2026-10-21T09:15:30.250+02:00"
    pieces = ["Delivery", " window", " starts", " at", " ", said, "."]
    result = run(gateway, "full", scenario("1d6e0b7a-5c2f-4e9d-8a31-6f0b2c4d8e17", CHAT_REQUEST | {"stream": True},
                                           [sse_response(azure_stream(pieces, 52, 7))]))[0]
    sent = event(result)
    assert said in sent["response"]
    assert rebuild_stream(sent["response"]).choices[0].text == "".join(pieces)
    row = store([result], SIGNED)["1d6e0b7a-5c2f-4e9d-8a31-6f0b2c4d8e17"]
    assert (row["prompt_tokens"], row["completion_tokens"], row["price_status"]) == (52, 7, "priced")




def test_include_usage_injection_forwards_the_callers_text_unchanged(gateway: PolicyRuntime, store):
    """The model must get what the caller wrote: adding stream_options may not rewrite the rest of
    the body (JSON.NET would turn a date-like message into its own date format)."""
    said = "2026-10-21T09:15:30.250+02:00"
    request = {"messages": [{"role": "user", "content": said}], "stream": True, "max_tokens": 50}
    stream = sse(chat_stream_payloads(["Noted", "."], usage=usage_object(12, 2)))
    result = run(gateway, "usage", scenario("3d9f5b1e-2a4c-4e6f-8b0d-1c3e5a7b9d2f", request, [sse_response(stream)]))[0]
    forwarded = result["forwarded"][0]["body"]
    assert forwarded == dumps(request)[:-1] + ',"stream_options":{"include_usage":true}}'
    assert json.loads(forwarded)["messages"][0]["content"] == said
    row = store([result])["3d9f5b1e-2a4c-4e6f-8b0d-1c3e5a7b9d2f"]
    assert (row["prompt_tokens"], row["completion_tokens"], row["usage_source"]) == (12, 2, "reported")

def test_responses_api_stream_on_the_v1_api(gateway: PolicyRuntime, store):
    request = {"model": "gpt-41-mini", "input": [{"role": "user", "content": "Summarise ticket 88412."}], "stream": True}
    stream = responses_stream(sample_words(40), usage=responses_usage(215, 40, cached=0, reasoning=0))
    result = run(gateway, "full", scenario("2e8a4c6f-1b3d-4f5a-9c7e-0d2b4f6a8c10", request, [sse_response(stream)],
                                           path="/openai/v1/responses"))[0]
    sent = event(result)
    assert sent["deployment"] == "gpt-41-mini" and sent["apiVersion"] == ""      # v1: no dated version
    assert "api-version" not in result["forwarded"][0]["url"]
    assert "stream_options" not in json.loads(result["forwarded"][0]["body"])   # only chat/completions get it
    assert sent["model"] == "gpt-4.1-mini-2025-04-14" and sent["usage"]["input_tokens"] == 215
    assert sent["response"] == stream                                            # Responses streams are kept as sent
    row = store([result], SIGNED)["2e8a4c6f-1b3d-4f5a-9c7e-0d2b4f6a8c10"]
    assert (row["prompt_tokens"], row["completion_tokens"], row["endpoint"]) == (215, 40, "responses")
    assert row["price_status"] == "priced"


def test_large_embeddings_body_is_read_from_its_tail(gateway: PolicyRuntime, store):
    """A 1.3 MB embeddings answer is not parsed; usage and model come from its last 16 KB, and the
    vectors are never attached, even in full mode."""
    vector = [round(((i * 7919) % 2000 - 1000) / 31337.0, 9) for i in range(1536)]
    data = [{"object": "embedding", "index": i, "embedding": vector} for i in range(64)]
    body = dumps({"object": "list", "data": data, "model": "text-embedding-3-small",
                  "usage": {"prompt_tokens": 5120, "total_tokens": 5120}})
    assert len(body) > 1_048_576
    request = {"input": [f"Ticket {i}: parcel delayed at the depot" for i in range(64)]}
    result = run(gateway, "full", scenario("3f9b5d7a-2c4e-4a6b-8d0f-1e3a5c7b9d21", request, [backend(200, body)],
                                           path="/openai/deployments/embed-small/embeddings"))[0]
    sent = event(result)
    assert sent["model"] == "text-embedding-3-small" and sent["usage"] == {"prompt_tokens": 5120, "total_tokens": 5120}
    assert sent["response"] is None and sent["request"] == request
    assert len(result["events"][0]["message"]) < 10_000
    row = store([result], SIGNED)["3f9b5d7a-2c4e-4a6b-8d0f-1e3a5c7b9d21"]
    assert (row["prompt_tokens"], row["completion_tokens"], row["endpoint"]) == (5120, 0, "embeddings")
    assert Decimal(row["total_cost"]) == cost(5120, 0, "0.02", "0")


def test_gateway_429_from_the_product_limit_is_metered_not_billed(gateway: PolicyRuntime, store):
    reject = {"policy": "rate-limit-by-key", "scope": "product", "status": 429, "retryAfter": "17", "reason": "RateLimitExceeded"}
    result = run(gateway, "full", scenario("4a0c6e8b-3d5f-4b7c-9e1a-2f4b6d8c0e32", CHAT_REQUEST, [], reject=reject))[0]
    assert result["forwarded"] == [] and result["lastError"]["section"] == "inbound"
    assert result["response"]["status"] == 429 and result["response"]["headers"]["Retry-After"] == "17"
    sent = event(result)
    assert sent["status"] == 429 and sent["backend"] == {"id": None, "url": None, "region": None}
    # rejected before the inbound metering fragment ran: no request facts
    assert sent["stream"] is False and sent["request"] is None and sent["usage"] is None
    row = store([result], SIGNED)["4a0c6e8b-3d5f-4b7c-9e1a-2f4b6d8c0e32"]
    assert row["price_status"] == "not_billable" and Decimal(row["total_cost"]) == 0


def test_backend_429_fails_over_and_the_success_is_billed_once(gateway: PolicyRuntime, store):
    throttled = backend(429, dumps({"error": {"code": "429", "message": "Requests to the ChatCompletions_Create Operation "
                                              "have exceeded token rate limit. Please retry after 3 seconds."}}),
                        headers={"Retry-After": "3"})
    answer = backend(200, chat_body("It arrives tomorrow.", usage=usage_object(41, 6)), host=SPILLOVER)
    result = run(gateway, "usage", scenario("5b1d7f9c-4e6a-4c8d-8f2b-3a5c7e9d1f43", CHAT_REQUEST, [throttled, answer],
                                            query="api-version=2025-01-01-preview"))[0]
    assert result["waits"] == [0]                                 # first-fast-retry, to another member
    assert [f["body"] for f in result["forwarded"]] == [dumps(CHAT_REQUEST)] * 2   # body buffered for the retry
    sent = event(result)
    assert sent["status"] == 200 and sent["backend"]["id"] == "aoai-swc-paygo-1"
    assert sent["apiVersion"] == "2025-01-01-preview"              # the caller's, not the default
    row = store([result])["5b1d7f9c-4e6a-4c8d-8f2b-3a5c7e9d1f43"]
    assert row["price_status"] == "priced" and row["completion_tokens"] == 6


def test_backend_429_until_retries_run_out_waits_retry_after_capped(gateway: PolicyRuntime, store):
    throttled = [backend(429, dumps({"error": {"code": "429", "message": "Rate limit is exceeded."}}),
                         headers={"Retry-After": "30"}, host=h) for h in (PTU, SPILLOVER, PTU)]
    result = run(gateway, "usage", scenario("6c2e8a0d-5f7b-4d9e-9a3c-4b6d8f0e2a54", CHAT_REQUEST, throttled))[0]
    assert result["waits"] == [0, 10] and len(result["forwarded"]) == 3   # count 2; wait capped at 10 s
    assert result["response"]["status"] == 429 and result["response"]["headers"]["Retry-After"] == "30"
    sent = event(result)
    assert sent["status"] == 429 and sent["usage"] is None
    row = store([result])["6c2e8a0d-5f7b-4d9e-9a3c-4b6d8f0e2a54"]
    assert row["price_status"] == "not_billable"


def test_content_filter_rejection_is_billable_in_every_capture_mode(gateway: PolicyRuntime, store):
    """A 400 content-filter rejection processed the prompt: Azure bills it. The same request must not
    be free in one mode and charged in another. Where the prompt was captured (request, full) its
    estimate is the charge; in usage mode no text leaves the gateway, so the row is billable with
    unknown tokens (no_usage: shown as unpriced, never as not billable)."""
    rows = {}
    for i, profile in enumerate(PROFILES):
        request_id = f"8e4a0c2f-7b9d-4f1a-8c5e-6d8f0b2c4e7{i}"
        result = run(gateway, profile, scenario(request_id, CHAT_REQUEST, [backend(400, content_filter_error_body())]))[0]
        sent = event(result)
        assert sent["status"] == 400 and result["response"]["body"] == content_filter_error_body()
        rows[profile] = store([result], settings(profile))[request_id]
        assert rows[profile]["price_status"] != "not_billable", f"{profile} mode: a content-filter rejection stored as free"
        assert sent["response"] == content_filter_error_body()          # verdicts only, no prompt text
    assert rows["usage"]["price_status"] == "no_usage"
    for profile in ("request", "full"):
        assert rows[profile]["price_status"] == "priced" and rows[profile]["usage_source"] == "estimated"
    assert rows["request"]["prompt_tokens"] == rows["full"]["prompt_tokens"] > 20
    assert rows["request"]["total_cost"] == rows["full"]["total_cost"]



def test_other_400s_stay_not_billable_and_carry_no_body_outside_full_mode(gateway: PolicyRuntime, store):
    bad_request = dumps({"error": {"code": "BadRequest", "message": "Unsupported parameter: 'max_tokens'.",
                                   "param": "max_tokens", "type": "invalid_request_error"}})
    result = run(gateway, "usage", scenario("9f5b1d3a-8c0e-4a2b-9d6f-7e9a1c3d5f86", CHAT_REQUEST, [backend(400, bad_request)]))[0]
    assert event(result)["response"] is None
    assert store([result])["9f5b1d3a-8c0e-4a2b-9d6f-7e9a1c3d5f86"]["price_status"] == "not_billable"


def test_event_over_200_kb_is_cut_and_still_becomes_a_truncated_row(gateway: PolicyRuntime, store, sqlite_engine):
    """A 260 KB answer in full mode: APIM cuts the message at 200 KB; the header and usage precede
    the payloads, so the pipeline stores the row from what survived and keeps the bytes for audit."""
    long_answer = " ".join(sample_words(60_000))
    body = chat_body(long_answer, usage=usage_object(310, 48_000))
    assert len(body.encode()) > 260_000
    request_id = "0a6c2e4b-9d1f-4b3c-8e7a-8f0b2d4c6e98"
    result = run(gateway, "full", scenario(request_id, CHAT_REQUEST, [backend(200, body)]))[0]
    assert result["response"]["body"] == body                     # the caller's answer is whole
    (wire,) = on_the_wire(result)
    assert len(result["events"][0]["message"].encode()) > EVENT_HUB_LIMIT == len(wire)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(wire)
    # a cut event lost its signature with its tail: counted once reviewed (docs/security.md, "Signed events")
    row = store([result], PipelineSettings(signing_secret=HMAC_KEY.encode(), require_signature=False))[request_id]
    assert row["truncated"] and row["usage_source"] == "reported"
    assert (row["prompt_tokens"], row["completion_tokens"]) == (310, 48_000)
    assert Decimal(row["total_cost"]) == cost(310, 48_000, "2.50", "10.00")
    with sqlite_engine.connect() as conn:
        audit = conn.execute(sa.select(quarantine.c.reason, quarantine.c.resolved_at)).all()
    assert [(reason, resolved is not None) for reason, resolved in audit] == [("truncated", True)]


def test_include_usage_is_not_forced_on_a_caller_who_said_false(gateway: PolicyRuntime, store):
    """The caller's explicit include_usage: false is respected; in usage mode nothing can be
    counted, so the row says the tokens are unknown (no_usage), never a silent $0."""
    request = CHAT_REQUEST | {"stream": True, "stream_options": {"include_usage": False}}
    stream = sse(chat_stream_payloads(["It", " arrives", " tomorrow", "."]))
    result = run(gateway, "usage", scenario("1b7d3f5c-0e2a-4c4d-9f8b-9a1c3e5d7f09", request, [sse_response(stream)]))[0]
    assert json.loads(result["forwarded"][0]["body"])["stream_options"] == {"include_usage": False}
    sent = event(result)
    assert sent["stream"] is True and sent["usage"] is None and sent["model"] == "gpt-4o-2024-11-20"
    row = store([result])["1b7d3f5c-0e2a-4c4d-9f8b-9a1c3e5d7f09"]
    assert (row["usage_source"], row["price_status"], row["total_cost"]) == ("none", "no_usage", None)


def test_content_chunk_shape_is_compacted_as_documented(gateway: PolicyRuntime, store):
    """The before/after example of docs/policies.md, produced by the policy itself."""
    stream = sse([chat_chunk([content_choice(" parents")], with_usage_field=True)], done=False)
    result = run(gateway, "full", scenario("2c8e4a6d-1f3b-4d5e-8a9c-0b2d4f6a8c1a", CHAT_REQUEST | {"stream": True},
                                           [sse_response(stream)]))[0]
    assert event(result)["response"].startswith(
        'data: {"choices":[{"delta":{"content":" parents"},"index":0}],"created":1732000000,'
    )
    # a stream cut before its end: what was seen is counted, and marked as a lower bound
    row = store([result], SIGNED)["2c8e4a6d-1f3b-4d5e-8a9c-0b2d4f6a8c1a"]
    assert row["usage_source"] == "partial" and row["completion_tokens"] == 1


# ---- money budgets: the aoai-budget fragment (product inbound) and aoai-budget-header --------------

BUDGET_URL = "https://func-aoai-metering.azurewebsites.net/api/budget"
BUDGET_KEY = "q1X9fK2mZ7rT4vB8nL3pW6yD0sH5jC2eA9uG4kM7oR1tE-Vw=="
BUDGET_VALUES = PROFILES["usage"] | {"aoai-budget-url": BUDGET_URL, "aoai-budget-function-key": BUDGET_KEY,
                                     "aoai-budget-cache-seconds": "60", "aoai-budget-timeout-seconds": "2"}
ANSWERED = backend(200, chat_body("Your order ships on Monday.", usage=usage_object(52, 9)))


def budget_answer(status: str, spent: str, *, until: str | None = None) -> dict[str, Any]:
    """What GET /api/budget/{subscriptionId} answers (function_app.answer_budget)."""
    body = {"subscription_id": SUBSCRIPTION["id"], "status": status, "spent": spent, "limit": "1500.00",
            "currency": "USD", "forecast": "1720.40", "period": "2026-10", "budget": f"subscription:{SUBSCRIPTION['id']}",
            "until": until}
    return {"status": 200, "body": dumps(body)}


def budget_scenario(request_id: str, answers: list[dict[str, Any]], *, at: str = "2026-10-21T07:15:30.250Z",
                    responses: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    found = scenario(request_id, CHAT_REQUEST, [ANSWERED] if responses is None else responses)
    found["timestamp"] = at
    found["sendRequest"] = answers
    return found


def run_budget(gateway: PolicyRuntime, *scenarios: dict[str, Any]) -> list[dict[str, Any]]:
    results = gateway.run(BUDGET_VALUES, list(scenarios))
    for result in results:
        assert result["expressionErrors"] == [], result["expressionErrors"]
    return results


def test_budget_ok_and_warn_pass_with_the_status_header(gateway: PolicyRuntime, store):
    ok, warn = run_budget(gateway, budget_scenario("7c3e9a1b-5f2d-4e8a-9b6c-0d1e2f3a4b51", [budget_answer("ok", "212.40")]),
                          budget_scenario("7c3e9a1b-5f2d-4e8a-9b6c-0d1e2f3a4b52", [budget_answer("warn", "1260.00")],
                                          at="2026-10-21T07:17:00Z"))  # after 90 s: the cached "ok" expired
    assert ok["sent"] == [{"url": f"{BUDGET_URL}/{SUBSCRIPTION['id']}", "method": "GET",
                           "headers": {"x-functions-key": BUDGET_KEY}, "timeout": 2}]
    assert ok["response"]["status"] == 200 and ok["response"]["headers"]["x-budget-status"] == "ok"
    assert len(ok["forwarded"]) == 1 and "x-functions-key" not in ok["forwarded"][0]["headers"]
    assert {"store": f"aoai-budget:{SUBSCRIPTION['id']}", "seconds": 60} in ok["cache"]
    assert warn["response"]["status"] == 200 and warn["response"]["headers"]["x-budget-status"] == "warn"
    assert len(warn["sent"]) == 1
    rows = store([ok, warn])  # still metered and priced as usual
    assert {r["price_status"] for r in rows.values()} == {"priced"} and len(rows) == 2


def test_a_blocked_subscription_gets_429_with_the_budget_and_until_when(gateway: PolicyRuntime):
    result = run_budget(gateway, budget_scenario("7c3e9a1b-5f2d-4e8a-9b6c-0d1e2f3a4b53",
                                                 [budget_answer("blocked", "1503.75", until="2026-11-01T00:00:00Z")]))[0]
    assert result["forwarded"] == []  # never reaches Azure OpenAI
    response = result["response"]
    assert response["status"] == 429 and response["headers"]["x-budget-status"] == "blocked"
    assert response["headers"]["Content-Type"] == "application/json"
    assert response["headers"]["Retry-After"] == str(int((datetime(2026, 11, 1, tzinfo=timezone.utc)
                                                          - datetime(2026, 10, 21, 7, 15, 30, 250000, tzinfo=timezone.utc)).total_seconds()))
    error = json.loads(response["body"])["error"]
    assert error["code"] == "BudgetExceeded" and error["budget"] == f"subscription:{SUBSCRIPTION['id']}"
    assert error["until"] == "2026-11-01T00:00:00Z" and (error["spent"], error["limit"], error["currency"]) == ("1503.75", "1500.00", "USD")
    assert "is exceeded (1503.75 of 1500.00 USD in 2026-10); requests are refused until 2026-11-01T00:00:00Z" in error["message"]


@pytest.mark.parametrize("answer", [{"timeout": True}, {"status": 500, "body": "{\"error\": \"budget status unavailable\"}"},
                                    {"status": 200, "body": "<html>sign in</html>"}], ids=["timeout", "503", "not-json"])
def test_when_the_budget_service_does_not_answer_the_gateway_fails_open_and_says_so(gateway: PolicyRuntime, answer):
    down, soon, later = run_budget(
        gateway,
        budget_scenario("7c3e9a1b-5f2d-4e8a-9b6c-0d1e2f3a4b54", [answer]),
        budget_scenario("7c3e9a1b-5f2d-4e8a-9b6c-0d1e2f3a4b55", [], at="2026-10-21T07:15:50Z"),
        budget_scenario("7c3e9a1b-5f2d-4e8a-9b6c-0d1e2f3a4b56", [budget_answer("ok", "212.40")], at="2026-10-21T07:16:10Z"))
    assert down["response"]["status"] == 200 and len(down["forwarded"]) == 1
    assert down["response"]["headers"]["x-budget-status"] == "unavailable"
    assert {"store": f"aoai-budget:{SUBSCRIPTION['id']}", "seconds": 30} in down["cache"]  # a short memory of the outage
    assert soon["sent"] == [] and soon["response"]["headers"]["x-budget-status"] == "unavailable"
    assert len(later["sent"]) == 1 and later["response"]["headers"]["x-budget-status"] == "ok"  # asked again after 30 s


def test_the_answer_is_cached_per_subscription_for_the_configured_time(gateway: PolicyRuntime):
    blocked = budget_answer("blocked", "1503.75", until="2026-11-01T00:00:00Z")
    other = budget_scenario("7c3e9a1b-5f2d-4e8a-9b6c-0d1e2f3a4b60", [budget_answer("ok", "10.00")], at="2026-10-21T07:15:40Z")
    other["subscription"] = {"id": "sub-finance-analytics", "name": "Finance analytics"}
    first, hit, elsewhere, expired = run_budget(
        gateway,
        budget_scenario("7c3e9a1b-5f2d-4e8a-9b6c-0d1e2f3a4b57", [blocked]),
        budget_scenario("7c3e9a1b-5f2d-4e8a-9b6c-0d1e2f3a4b58", [], at="2026-10-21T07:16:29Z"),  # 59 s later
        other,
        budget_scenario("7c3e9a1b-5f2d-4e8a-9b6c-0d1e2f3a4b59", [budget_answer("ok", "0.00")], at="2026-10-21T07:16:31Z"))
    assert len(first["sent"]) == 1 and first["response"]["status"] == 429
    assert hit["sent"] == [] and hit["response"]["status"] == 429 and hit["forwarded"] == []   # from the cache
    assert {"lookup": f"aoai-budget:{SUBSCRIPTION['id']}", "hit": True} in hit["cache"]
    assert elsewhere["sent"][0]["url"].endswith("/sub-finance-analytics") and elsewhere["response"]["status"] == 200
    assert len(expired["sent"]) == 1 and expired["response"]["headers"]["x-budget-status"] == "ok"  # 61 s: asked again


@ALLOW_LIST
def test_budget_expressions_use_only_types_and_members_apim_allows(gateway: PolicyRuntime):
    check = gateway.allow_list_check(BUDGET_VALUES)
    assert check["violations"] == []
    assert {"System.Uri::EscapeDataString", "System.Math::Max"} <= set(check["referenced"])


def test_with_the_budget_url_none_the_fragment_does_nothing(gateway: PolicyRuntime):
    result = gateway.run(PROFILES["usage"], [budget_scenario("7c3e9a1b-5f2d-4e8a-9b6c-0d1e2f3a4b61", [])])[0]
    assert result["sent"] == [] and result["cache"] == [] and "x-budget-status" not in result["response"]["headers"]


def test_speech_is_billed_by_the_characters_of_its_input_never_its_text(gateway: PolicyRuntime, store):
    """tts answers with audio and no usage; the policy sends the input's length in code points (an emoji
    is one character) as the usage, in every capture mode, and the row is priced per 1M characters."""
    text = "Your parcel 7741-2209 arrives tomorrow before noon. \U0001F69A Thank you!"
    request = {"model": "tts-hd", "input": text, "voice": "alloy", "response_format": "mp3"}
    audio = backend(200, "ID3\u0004\u0000\u0000\u0000\u0000\u0000#TSSE", content_type="audio/mpeg")
    for i, profile in enumerate(PROFILES):
        request_id = f"7c1d2e3f-4a5b-4c6d-8e7f-00000000010{i}"
        result = run(gateway, profile, scenario(request_id, request, [audio],
                                                path="/openai/deployments/tts-hd/audio/speech"))[0]
        sent = event(result)
        assert sent["usage"] == {"type": "characters", "characters": len(text)}
        assert sent["response"] is None and (sent["request"] is None) == (profile == "usage")
        row = store([result], settings(profile))[request_id]
        assert (row["endpoint"], row["input_characters"], row["price_status"]) == ("audio", len(text), "priced")
        assert Decimal(row["total_cost"]) == Decimal(len(text)) * Decimal(30) / Decimal(1_000_000)
