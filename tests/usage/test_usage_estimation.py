"""resolve_usage: reported usage wins; otherwise an offline estimate whose source says how complete it is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from azure_shapes import (
    chat_body,
    chat_stream,
    completions_stream,
    content_filter_error_body,
    responses_stream,
    responses_usage,
    sse,
    tool_call_stream_payloads,
    usage_object,
)
from metering.model import NO_USAGE, BadEvent, UsageEvent
from metering.usage.tokens import (
    AZURE_TERMINATOR_SINCE,
    OPENAI_TERMINATOR_FROM,
    OPENAI_TERMINATOR_STOP_FROM,
    OPENAI_TERMINATOR_UNTIL,
    AZURE_TERMINATOR_TOKENS,
    count_chat_prompt,
    count_embeddings_input,
    count_responses_input,
    count_text,
)
from metering.usage.resolve import resolve_usage

CHAT_REQUEST = {
    "messages": [
        {"role": "system", "content": "You are an AI assistant that helps people find information."},
        {"role": "user", "content": "请讲个笑话，300字左右"},
    ],
    "max_tokens": 1500,
    "stream": True,
    "temperature": 0,
}
ANSWER = ["Why", " did", " the", " invoice", " blush", "?", " It", " saw", " the", " chargeback", "."]
ANSWER_TEXT = "".join(ANSWER)


def event(**fields) -> UsageEvent:
    defaults = dict(
        request_id="3f0c6f5e-8d2b-4a51-9d4e-0d3c1d2b7a90",
        event_time=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),  # after AZURE_TERMINATOR_SINCE
        deployment="chat-prod",
        status_code=200,
        endpoint="chat.completions",
        capture="full",
    )
    return UsageEvent(**(defaults | fields))


# --- reported usage wins -----------------------------------------------------------------


def test_policy_attached_usage_wins_over_everything():
    e = event(usage=usage_object(30, 11), request=CHAT_REQUEST, response=chat_stream(ANSWER, usage=usage_object(99, 99)))
    usage = resolve_usage(e)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.source) == (30, 11, "reported")


def test_body_usage_wins():
    e = event(request=CHAT_REQUEST, response=chat_body(ANSWER_TEXT, usage=usage_object(33, 45)), is_streaming=False)
    usage = resolve_usage(e)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.source, usage.model) == (33, 45, "reported", "gpt-4o-2024-11-20")


def test_stream_include_usage_chunk_wins():
    e = event(request=CHAT_REQUEST, response=chat_stream(ANSWER, model="gpt-4o-mini-2024-07-18", usage=usage_object(41, 12, cached=0)), is_streaming=True)
    usage = resolve_usage(e)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (41, 12, 53)
    assert usage.source == "reported" and usage.model == "gpt-4o-mini-2024-07-18"


def test_responses_completed_usage_wins():
    stream = responses_stream(["Hi"], usage=responses_usage(120, 30, cached=64, reasoning=10), model="o4-mini-2025-04-16")
    e = event(endpoint="responses", request={"input": "hi"}, response=stream, is_streaming=True)
    usage = resolve_usage(e)
    assert (usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens, usage.reasoning_tokens) == (120, 64, 30, 10)
    assert usage.source == "reported" and usage.model == "o4-mini-2025-04-16"


def test_invalid_stream_usage_is_a_bad_event():
    bad = usage_object(10, 5) | {"prompt_tokens": -1}
    with pytest.raises(BadEvent):
        resolve_usage(event(request=CHAT_REQUEST, response=chat_stream(ANSWER, usage=bad)))


# --- estimates -----------------------------------------------------------------------------


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_stream_without_usage_is_estimated(newline):
    e = event(request=CHAT_REQUEST, response=chat_stream(ANSWER, model="gpt-35-turbo", newline=newline), is_streaming=True)
    usage = resolve_usage(e)
    assert usage.source == "estimated"
    assert usage.prompt_tokens == count_chat_prompt(CHAT_REQUEST, "gpt-35-turbo").tokens == 33
    assert usage.completion_tokens == count_text(ANSWER_TEXT, "gpt-35-turbo") + AZURE_TERMINATOR_TOKENS
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.cached_tokens == usage.reasoning_tokens == 0
    assert usage.model == "gpt-35-turbo"
    assert usage.notes == ()


def test_real_azure_completions_capture_is_estimated():
    # completion_stream.txt shape: text_completion chunks with "usage": null, no usage at the end.
    request = {"model": "text-davinci-003", "prompt": "写个中文小说，300字左右.", "max_tokens": 1500, "stream": True}
    e = event(endpoint="completions", request=request, response=completions_stream(["\n", "\n", "这", "是"], model="text-davinci-003"))
    usage = resolve_usage(e)
    assert usage.source == "estimated"
    assert usage.completion_tokens == count_text("\n\n这是", "text-davinci-003")
    assert usage.prompt_tokens == count_text(request["prompt"], "text-davinci-003")


def test_non_streamed_body_without_usage_is_estimated():
    e = event(request=CHAT_REQUEST, response=chat_body(ANSWER_TEXT, model="gpt-4o-2024-11-20"), is_streaming=False)
    usage = resolve_usage(e)
    assert usage.source == "estimated"
    assert usage.completion_tokens == count_text(ANSWER_TEXT, "gpt-4o") + AZURE_TERMINATOR_TOKENS
    assert usage.model == "gpt-4o-2024-11-20"


def test_tool_call_stream_is_estimated_with_arguments():
    stream = sse(tool_call_stream_payloads([("call_1", "get_current_weather", ['{"location":', ' "Paris"}'])]))
    usage = resolve_usage(event(request=CHAT_REQUEST, response=stream))
    assert usage.source == "estimated"
    assert usage.completion_tokens == count_text(" to=functions.get_current_weather", "gpt-4o") + count_text('{"location": "Paris"}', "gpt-4o") + 4 + AZURE_TERMINATOR_TOKENS


def test_responses_stream_without_usage_counts_instructions_and_input():
    request = {"instructions": "Answer in one sentence.", "input": [{"role": "user", "content": "What is APIM?"}]}
    response = responses_stream(["API", " Management", " is", " a", " gateway", "."], usage=None, model="gpt-4.1-2025-04-14")
    usage = resolve_usage(event(endpoint="responses", request=request, response=response))
    assert usage.source == "estimated"
    assert usage.prompt_tokens == count_responses_input(request, "gpt-4.1").tokens
    assert usage.completion_tokens == count_text("API Management is a gateway.", "gpt-4.1") + 1  # the output item's end


def test_request_only_capture_is_partial():
    usage = resolve_usage(event(capture="request", request=CHAT_REQUEST, response=None, model=None, deployment="gpt-35-turbo"))
    assert usage.source == "partial"
    assert usage.prompt_tokens == 33 and usage.completion_tokens == 0
    assert "model_from_deployment_name" in usage.notes


@pytest.mark.parametrize("response", [None, "", "<html>502 Bad Gateway</html>", '{"choices": [', '{"unexpected": true}'])
def test_missing_or_unparseable_response_is_partial(response):
    usage = resolve_usage(event(request=CHAT_REQUEST, response=response))
    assert usage.source == "partial"
    assert usage.prompt_tokens > 0 and usage.completion_tokens == 0


def test_truncated_stream_is_partial_with_what_was_seen():
    full = chat_stream(ANSWER, model="gpt-4o-2024-08-06")
    cut = full[: full.index('"content":" chargeback"') + 5]
    usage = resolve_usage(event(request=CHAT_REQUEST, response=cut, truncated=True))
    assert usage.source == "partial"
    assert usage.completion_tokens == count_text("Why did the invoice blush? It saw the", "gpt-4o")  # no end seen: no terminator
    assert "stream_truncated" in usage.notes


def test_stream_without_request_is_partial():
    usage = resolve_usage(event(capture="usage", request=None, response=chat_stream(ANSWER)))
    assert usage.source == "partial"
    assert usage.prompt_tokens == 0 and usage.completion_tokens == count_text(ANSWER_TEXT, "gpt-4o") + AZURE_TERMINATOR_TOKENS


def test_embeddings_request_alone_is_a_whole_estimate():
    e = event(endpoint="embeddings", request={"input": ["test for embedding"]}, response=None, capture="request", deployment="text-embedding-ada-002")
    usage = resolve_usage(e)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.source) == (3, 0, "estimated")


def test_request_sent_as_json_text_is_parsed():
    e = event(capture="request", request=orjson.dumps(CHAT_REQUEST).decode(), response=None, model="gpt-35-turbo")
    assert resolve_usage(e).prompt_tokens == 33


def test_nothing_to_count_is_no_usage():
    assert resolve_usage(event(capture="usage", request=None, response=None)) is NO_USAGE
    assert resolve_usage(event(endpoint="images", request={"prompt": "a cat", "size": "1024x1024"}, response=None)) is NO_USAGE
    # a text-to-speech request is billed per character of its input (#30): counted, no tokens
    speech = resolve_usage(event(endpoint="audio", request={"input": "Hello", "voice": "alloy"}, response=None))
    assert (speech.input_characters, speech.total_tokens, speech.source) == (5, 0, "estimated")


@pytest.mark.parametrize(
    "request_body, expected",
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "chat"),
        ({"prompt": "hi"}, "completions"),
        ({"input": "hi"}, "embeddings"),
        ({"input": [{"role": "user", "content": "hi"}]}, "responses"),
        ({"instructions": "Be brief.", "input": "hi"}, "responses"),
    ],
)
def test_unclassified_endpoint_is_inferred_from_the_request(request_body, expected):
    usage = resolve_usage(event(endpoint="other", request=request_body, response=None, capture="request", model="gpt-4o"))
    counts = {
        "chat": count_chat_prompt(request_body, "gpt-4o").tokens,
        "completions": count_text("hi", "gpt-4o"),
        "embeddings": count_text("hi", "gpt-4o"),
        "responses": count_responses_input(request_body, "gpt-4o").tokens,
    }
    assert usage.prompt_tokens == counts[expected]


# --- status codes --------------------------------------------------------------------------


def test_content_filter_rejection_bills_the_prompt():
    e = event(status_code=400, request=CHAT_REQUEST, response=content_filter_error_body(), model=None, deployment="gpt-4o")
    usage = resolve_usage(e)
    assert usage.source == "estimated"
    assert usage.prompt_tokens == count_chat_prompt(CHAT_REQUEST, "gpt-4o").tokens
    assert usage.completion_tokens == 0
    assert "content_filter_rejection" in usage.notes


def test_content_filter_rejection_without_request_is_no_usage():
    assert resolve_usage(event(status_code=400, request=None, response=content_filter_error_body())) is NO_USAGE


@pytest.mark.parametrize("status", [400, 401, 404, 408, 429, 500, 503])
def test_failed_requests_are_not_estimated(status):
    body = orjson.dumps({"error": {"code": "429" if status == 429 else "error", "message": "nope"}}).decode()
    assert resolve_usage(event(status_code=status, request=CHAT_REQUEST, response=body)) is NO_USAGE


@pytest.mark.parametrize("status", [429, 500])
def test_failed_requests_keep_reported_usage(status):
    usage = resolve_usage(event(status_code=status, usage={"prompt_tokens": 7, "total_tokens": 7}, request=CHAT_REQUEST))
    assert (usage.prompt_tokens, usage.source) == (7, "reported")


# --- which model counts --------------------------------------------------------------------

# Chinese text tokenises differently in cl100k and o200k, so the count reveals the encoding used.
CJK_REQUEST = {"messages": [{"role": "user", "content": "请用三句话解释云计算的成本分摊与按部门计费的区别。"}]}
CL100K = count_chat_prompt(CJK_REQUEST, "gpt-4").tokens
O200K = count_chat_prompt(CJK_REQUEST, "gpt-4o").tokens


def test_cjk_counts_differ_between_encodings():
    assert CL100K != O200K


@pytest.mark.parametrize(
    "fields, hint, expected, note",
    [
        (dict(response=chat_stream(["好"], model="gpt-35-turbo"), model="gpt-4o", deployment="gpt-4o"), "gpt-4o", CL100K, None),
        (dict(response=None, capture="request", model="gpt-4-0613", deployment="gpt-4o"), "gpt-4o", CL100K, None),
        (dict(response=None, capture="request", model=None, deployment="gpt-4o"), "gpt-4-32k", CL100K, "model_from_deployment_mapping"),
        (dict(response=None, capture="request", model=None, deployment="gpt-35-turbo-0125"), None, CL100K, "model_from_deployment_name"),
        (dict(response=None, capture="request", model=None, deployment="chat-prod"), None, O200K, "encoding_fallback"),
    ],
)
def test_model_for_counting_precedence(fields, hint, expected, note):
    usage = resolve_usage(event(request=CJK_REQUEST, **fields), model_hint=hint)
    assert usage.prompt_tokens == expected
    if note:
        assert note in usage.notes


def test_embeddings_input_counted_with_embedding_encoding():
    e = event(endpoint="embeddings", request={"input": "请用三句话解释"}, response=None, capture="request", model=None, deployment="emb")
    usage = resolve_usage(e, model_hint="text-embedding-3-small")
    assert usage.prompt_tokens == count_embeddings_input("请用三句话解释", "text-embedding-3-small").tokens


# --- never raises --------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**6) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["messages", "input", "prompt", "tools", "role", "content", "type", "text", "choices", "delta", "usage"]), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    request=_json,
    response=st.one_of(st.none(), st.text(max_size=200), _json.map(lambda v: orjson.dumps(v).decode()), _json.map(lambda v: f"data: {orjson.dumps(v).decode()}\n\n")),
    endpoint=st.sampled_from(["chat.completions", "completions", "embeddings", "responses", "other"]),
    status=st.sampled_from([200, 400, 429, 500, None]),
)
def test_estimation_never_raises_except_bad_event(request, response, endpoint, status):
    try:
        usage = resolve_usage(event(request=request, response=response, endpoint=endpoint, status_code=status))
    except BadEvent:
        return  # invalid provider usage inside the response: the pipeline quarantines it
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens or usage.source == "reported"
    assert usage.source in ("reported", "estimated", "partial", "none")


# --- content-filter 400 on an unmapped deployment: the request's model, not the fallback ----


@pytest.mark.parametrize(
    "deployment, requested, expected, note",
    [
        ("chat-prod", "gpt-4", CL100K, "model_from_request"),  # OpenAI-style / v1 clients send the model
        ("chat-prod", "gpt-35-turbo-0125", CL100K, "model_from_request"),
        ("contoso-gpt35-turbo-prod", None, CL100K, "model_from_deployment_name"),  # squeezed spelling inside the name
        ("eastus-gpt-4-32k", "chat-prod", CL100K, "model_from_deployment_name"),  # a body "model" naming no model is skipped
        ("team-a-gpt-4o-mini", None, O200K, "model_from_deployment_name"),
    ],
)
def test_content_filter_rejection_on_unmapped_deployment_uses_the_requests_model(deployment, requested, expected, note):
    request = CJK_REQUEST | ({"model": requested} if requested else {})
    e = event(status_code=400, request=request, response=content_filter_error_body(), model=None, deployment=deployment)
    usage = resolve_usage(e)
    assert usage.source == "estimated" and "content_filter_rejection" in usage.notes
    assert usage.prompt_tokens == expected
    assert note in usage.notes and "encoding_fallback" not in usage.notes


def test_content_filter_rejection_with_no_model_anywhere_says_it_used_the_fallback():
    e = event(status_code=400, request=CJK_REQUEST, response=content_filter_error_body(), model=None, deployment="chat-prod")
    usage = resolve_usage(e)
    assert usage.prompt_tokens == O200K
    assert {"model_from_deployment_name", "encoding_fallback"} <= set(usage.notes)


def test_the_mapping_wins_over_the_requests_model():
    """Azure serves the deployment's model whatever the body says; the operator's mapping is that."""
    request = CJK_REQUEST | {"model": "gpt-4o"}
    e = event(status_code=400, request=request, response=content_filter_error_body(), model=None, deployment="chat-prod")
    usage = resolve_usage(e, model_hint="gpt-4-0613")
    assert usage.prompt_tokens == CL100K and "model_from_deployment_mapping" in usage.notes


def test_openai_backends_are_billed_without_the_azure_terminator():
    """The same stream served by api.openai.com (a backend an APIM may front too) is billed its text
    alone; by Azure OpenAI, or an unknown backend (this pipeline meters Azure), one token more."""
    stream = chat_stream(ANSWER, model="gpt-4o-2024-11-20")
    openai = resolve_usage(event(request=CHAT_REQUEST, response=stream, is_streaming=True, backend_url="https://api.openai.com/v1"))
    azure = resolve_usage(event(request=CHAT_REQUEST, response=stream, is_streaming=True,
                                backend_url="https://aoai-sc.openai.azure.com/openai"))
    unknown = resolve_usage(event(request=CHAT_REQUEST, response=stream, is_streaming=True))
    assert openai.completion_tokens == count_text(ANSWER_TEXT, "gpt-4o")
    assert azure.completion_tokens == unknown.completion_tokens == openai.completion_tokens + AZURE_TERMINATOR_TOKENS


def test_the_azure_terminator_is_billed_from_when_it_was_seen():
    """Azure recordings of April 2024 and March 2025 are exact without it: events before
    AZURE_TERMINATOR_SINCE are counted without it."""
    stream = chat_stream(ANSWER, model="gpt-4o-2024-11-20")
    before = resolve_usage(event(request=CHAT_REQUEST, response=stream, is_streaming=True,
                                 event_time=AZURE_TERMINATOR_SINCE - timedelta(seconds=1)))
    since = resolve_usage(event(request=CHAT_REQUEST, response=stream, is_streaming=True, event_time=AZURE_TERMINATOR_SINCE))
    assert before.completion_tokens == count_text(ANSWER_TEXT, "gpt-4o")
    assert since.completion_tokens == before.completion_tokens + AZURE_TERMINATOR_TOKENS


def test_openai_backends_billed_the_terminator_from_january_to_may_2025_with_a_stop_sequence_from_march():
    """api.openai.com billed the terminator between OPENAI_TERMINATOR_FROM and _UNTIL (its recordings
    of that window are one token short per choice without it), on requests with ``stop`` only from
    OPENAI_TERMINATOR_STOP_FROM (crewAI's answers that ended by themselves are exact before, one short
    after), and never for reasoning models."""
    stream = chat_stream(ANSWER, model="gpt-4o-2024-08-06")
    text = count_text(ANSWER_TEXT, "gpt-4o")

    def completion(when, request=CHAT_REQUEST, model_stream=stream):
        return resolve_usage(event(request=request, response=model_stream, is_streaming=True, event_time=when,
                                   backend_url="https://api.openai.com/v1")).completion_tokens

    assert completion(OPENAI_TERMINATOR_FROM) == text + AZURE_TERMINATOR_TOKENS
    assert completion(OPENAI_TERMINATOR_UNTIL - timedelta(seconds=1)) == text + AZURE_TERMINATOR_TOKENS
    assert completion(OPENAI_TERMINATOR_FROM - timedelta(seconds=1)) == text
    assert completion(OPENAI_TERMINATOR_UNTIL) == text
    stop = {**CHAT_REQUEST, "stop": ["\nObservation:"]}
    assert completion(OPENAI_TERMINATOR_FROM, stop) == text
    assert completion(OPENAI_TERMINATOR_STOP_FROM - timedelta(seconds=1), stop) == text
    assert completion(OPENAI_TERMINATOR_STOP_FROM, stop) == text + AZURE_TERMINATOR_TOKENS
    assert completion(OPENAI_TERMINATOR_UNTIL, stop) == text
    reasoning = chat_stream(ANSWER, model="o3-mini-2025-01-31")
    assert completion(OPENAI_TERMINATOR_FROM, model_stream=reasoning) == completion(OPENAI_TERMINATOR_UNTIL, model_stream=reasoning)
