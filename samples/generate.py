"""Regenerate the demo capture in ``samples/events/`` (deterministic: same bytes every run).

  events/2026-10-gateway.jsonl.gz     a month of gateway traffic from bench/corpus.py
  events/2026-10-special-cases.jsonl  cases worth seeing one by one: redeliveries, the community
                                      format, a content-filter rejection, a request-only stream,
                                      the Responses API, a model with no rate
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "bench"))
from corpus import CorpusBuilder, write_jsonl  # noqa: E402

import azure_shapes  # noqa: E402  (put on the path by corpus)


def special_cases(builder: CorpusBuilder) -> list[bytes]:
    gateway = list(builder.events(3))  # redelivered by Event Hubs: the same bytes again
    base = {
        "schema": "aoai-usage/1",
        "gateway": {"service": "apim-contoso-ai", "region": "West Europe"},
        "product": "ai-standard",
        "api": "azure-openai",
        "user": {"id": "ines.keller", "email": "ines.keller@contoso.com"},
        "clientIp": "10.20.4.17",
        "attributes": {"x-cost-center": "CC-3005"},
        "apiVersion": "2024-10-21",
        "durationMs": 1450,
    }
    request = {
        "messages": [
            {"role": "system", "content": "You review contracts for the legal team."},
            {"role": "user", "content": "List the termination clauses in the attached agreement."},
        ],
        "stream": True,
    }
    request_only_stream = dict(
        base, requestId="0c7d5a9e-6b1f-4c8e-9d2a-5e3f1a7b9c01", time="2026-10-20T14:02:11.5120000Z",
        subscription={"id": "sub-legal-review", "name": "Legal Review"}, operation="ChatCompletions_Create",
        backend={"id": "aoai-swedencentral", "url": "https://aoai-swedencentral.openai.azure.com/openai", "region": "Sweden Central"},
        deployment="gpt-4o", status=200, stream=True, capture="request", model=None, usage=None, request=request,
        response=None,
    )
    content_filtered = dict(
        base, requestId="0c7d5a9e-6b1f-4c8e-9d2a-5e3f1a7b9c02", time="2026-10-21T08:45:00.0000000Z",
        subscription={"id": "sub-customer-care-bot", "name": "Customer Care Bot"}, operation="ChatCompletions_Create",
        backend={"id": "aoai-westeurope", "url": "https://aoai-westeurope.openai.azure.com/openai", "region": "West Europe"},
        deployment="chat-prod", status=400, stream=False, capture="full", model=None, usage=None,
        request={"messages": [{"role": "user", "content": "Describe in detail how to hurt someone."}]},
        response=azure_shapes.content_filter_error_body(),
    )
    responses_api = dict(
        base, requestId="0c7d5a9e-6b1f-4c8e-9d2a-5e3f1a7b9c03", time="2026-10-22T17:30:42.0000000Z",
        subscription={"id": "sub-engineering-copilot", "name": "Engineering Copilot"}, operation="createResponse",
        backend={"id": "aoai-eastus2", "url": "https://aoai-eastus2.openai.azure.com/openai", "region": "East US 2"},
        deployment="gpt-4.1", status=200, stream=False, capture="usage", model="gpt-4.1-2025-04-14",
        usage=azure_shapes.responses_usage(5120, 740, cached=4096, reasoning=0), request=None, response=None,
    )
    unknown_model = dict(
        base, requestId="0c7d5a9e-6b1f-4c8e-9d2a-5e3f1a7b9c04", time="2026-10-23T11:11:11.0000000Z",
        subscription={"id": "sub-data-science-lab", "name": "Data Science Lab"}, operation="ChatCompletions_Create",
        backend={"id": "aoai-eastus2", "url": "https://aoai-eastus2.openai.azure.com/openai", "region": "East US 2"},
        deployment="phi-4-experiment", status=200, stream=False, capture="usage", model="Phi-4-mini-instruct",
        usage={"prompt_tokens": 900, "completion_tokens": 350, "total_tokens": 1250}, request=None, response=None,
    )
    community = {
        "ExecTimeUTC": "2026-10-05T09:15:27.4402735Z",
        "SubscriptionId": "sub-marketing-content",
        "OperationId": "ChatCompletions_Create",
        "ServiceName": "apim-contoso-ai.azure-api.net",
        "RequestIp": "10.20.9.33",
        "RequestUrl": "https://apim-contoso-ai.azure-api.net/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
        "Request": orjson.dumps({"messages": [{"role": "user", "content": "Write a tagline for our autumn sale."}]}).decode(),
        "ResponseString": azure_shapes.chat_body(
            "Fall into savings: up to 40% off everything cosy.",
            model="gpt-4o-2024-11-20",
            usage=azure_shapes.usage_object(14, 13),
        ),
    }
    extra = [request_only_stream, content_filtered, responses_api, unknown_model, community]
    return gateway + [orjson.dumps(e) for e in extra] + [orjson.dumps(content_filtered)]


def main() -> None:
    events_dir = HERE / "events"
    events_dir.mkdir(exist_ok=True)
    builder = CorpusBuilder(seed=2026, month="2026-10", max_stream_chunks=120)
    gateway = write_jsonl(events_dir / "2026-10-gateway.jsonl.gz", builder.events(600))
    special = write_jsonl(events_dir / "2026-10-special-cases.jsonl", iter(special_cases(builder)))
    print(f"wrote {gateway} gateway events and {special} special cases to {events_dir}")


if __name__ == "__main__":
    main()
