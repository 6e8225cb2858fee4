"""Regenerate the demo capture in ``samples/events/`` (deterministic: same bytes every run).

  events/2026-10-gateway.jsonl.gz     a month of gateway traffic from bench/corpus.py
  events/2026-10-special-cases.jsonl  cases worth seeing one by one: redeliveries, the community
                                      format, a content-filter rejection, a request-only stream,
                                      the Responses API, a model with no rate, and one of each token
                                      kind Azure bills apart: cache writes, the priority tier (also
                                      on a model whose card has no priority row: a visible fallback),
                                      audio in and out, image in and out, token-billed transcription,
                                      an embeddings response that names its model "ada"; and one of
                                      each unit billed beyond tokens: whisper audio seconds, tts-hd
                                      characters, file search calls and a code interpreter session
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "bench"))
from corpus import LEGACY_MIX, CorpusBuilder, write_jsonl  # noqa: E402

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
    extra = [request_only_stream, content_filtered, responses_api, unknown_model, community, *token_kinds(base)]
    return gateway + [orjson.dumps(e) for e in extra] + [orjson.dumps(content_filtered)]


def token_kinds(base: dict) -> list[dict]:
    """One request of each token kind and service tier that Azure bills apart."""
    eastus2 = {"id": "aoai-eastus2", "url": "https://aoai-eastus2.openai.azure.com/openai", "region": "East US 2"}
    swedencentral = {"id": "aoai-swedencentral", "url": "https://aoai-swedencentral.openai.azure.com/openai",
                     "region": "Sweden Central"}
    engineering = {"id": "sub-engineering-copilot", "name": "Engineering Copilot"}
    care = {"id": "sub-customer-care-bot", "name": "Customer Care Bot"}
    marketing = {"id": "sub-marketing-content", "name": "Marketing Content"}

    def event(number: int, day: int, **fields) -> dict:
        defaults = {"status": 200, "stream": False, "request": None, "response": None}
        return dict(base, requestId=f"0c7d5a9e-6b1f-4c8e-9d2a-5e3f1a7b9c{number:02d}",
                    time=f"2026-10-{day:02d}T10:{number:02d}:00.0000000Z", **{**defaults, **fields})

    return [
        # gpt-5.6 Responses stream on the priority tier that wrote 6,144 prompt tokens to the cache
        event(5, 24, subscription=engineering, operation="createResponse", backend=eastus2, deployment="gpt-5.6",
              stream=True, capture="full", model=None, usage=None,
              response=azure_shapes.responses_stream(
                  ["The migration ", "plan is ready."], model="gpt-5.6-2026-07-09", service_tier="priority",
                  usage=azure_shapes.responses_usage(9_000, 420, cached=2_048, cache_write=6_144, reasoning=256))),
        # gpt-4.1 chat completion that ran on the priority tier
        event(6, 24, subscription=care, operation="ChatCompletions_Create", backend=eastus2, deployment="gpt-4.1",
              capture="full", model=None, usage=None,
              response=azure_shapes.chat_body("Your refund was issued today.", model="gpt-4.1-2025-04-14",
                                              usage=azure_shapes.usage_object(1_800, 90), service_tier="priority")),
        # priority on gpt-5-mini, which the card prices only at the default tier: a flagged fallback
        event(7, 25, subscription=care, operation="ChatCompletions_Create", backend=eastus2, deployment="gpt-5-mini",
              capture="full", model=None, usage=None,
              response=azure_shapes.chat_body("Sure, here is the summary.", model="gpt-5-mini-2025-08-07",
                                              usage=azure_shapes.usage_object(2_400, 300, reasoning=128),
                                              service_tier="priority")),
        # gpt-4o-audio-preview: a spoken answer (the usage of a real Azure call) to a spoken question
        event(8, 26, subscription=care, operation="ChatCompletions_Create", backend=eastus2, deployment="gpt-4o-audio",
              capture="usage", model="gpt-4o-audio-preview-2024-12-17",
              usage=azure_shapes.usage_object(288, 696, audio_prompt=200, audio_completion=589, text_details=True)),
        # gpt-image-1 edit: text and image input, image output
        event(9, 27, subscription=marketing, operation="Images_Edit", backend=swedencentral, deployment="gpt-image-1",
              capture="full", model=None, usage=None, response=azure_shapes.image_body(48, 1_530, 4_160)),
        # gpt-4o-transcribe: audio input billed by the token
        event(10, 28, subscription=care, operation="Audio_Transcriptions_Create", backend=swedencentral,
              deployment="transcribe", capture="full", model=None, usage=None,
              response=azure_shapes.transcription_body("I would like to change my delivery address.",
                                                       audio=1_250, prompt_text=0, output=11)),
        # text-embedding-ada-002, which Azure's response calls "ada": priced through the deployments mapping
        event(11, 28, subscription=engineering, operation="embeddings_create", backend=swedencentral,
              deployment="embeddings-ada", capture="usage", model="ada",
              usage={"prompt_tokens": 5_120, "total_tokens": 5_120}),
        *billing_units(event, care, engineering, swedencentral, eastus2),
    ]


def billing_units(event, care: dict, engineering: dict, swedencentral: dict, eastus2: dict) -> list[dict]:
    """One request of each unit Azure bills beyond tokens: whisper's seconds of audio (its
    ``usage.type = duration``), tts-hd's input characters (the policy's count, usage capture), and a
    Responses call with two file search calls and a code interpreter container (full capture)."""
    tools = {
        "id": "resp_0c7d5a9e6b1f4c8e9d2a5e3f1a7b9c14", "object": "response", "created_at": 1792832400,
        "status": "completed", "model": "gpt-4.1-2025-04-14",
        "output": [
            {"type": "file_search_call", "id": "fs_0c7d5a9e6b1f4c8e01", "status": "completed",
             "queries": ["deployment runbook rollback"], "results": None},
            {"type": "file_search_call", "id": "fs_0c7d5a9e6b1f4c8e02", "status": "completed",
             "queries": ["on-call escalation"], "results": None},
            {"type": "code_interpreter_call", "id": "ci_0c7d5a9e6b1f4c8e03", "status": "completed",
             "code": "print(sum([12, 30, 7]))", "container_id": "cntr_0c7d5a9e6b1f4c8e9d2a", "outputs": None},
            {"type": "message", "id": "msg_0c7d5a9e6b1f4c8e04", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": "Roll back with the blue slot; 49 minutes.", "annotations": []}]},
        ],
        "usage": azure_shapes.responses_usage(2_300, 180, cached=0, reasoning=0),
    }
    return [
        event(12, 29, subscription=care, operation="Audio_Transcriptions_Create", backend=swedencentral,
              deployment="whisper", capture="usage", model=None, usage={"type": "duration", "seconds": 95}),
        event(13, 29, subscription=care, operation="Audio_Speech_Create", backend=swedencentral,
              deployment="tts-hd", capture="usage", model=None, usage={"type": "characters", "characters": 1_480}),
        event(14, 30, subscription=engineering, operation="createResponse", backend=eastus2, deployment="gpt-4.1",
              capture="full", model=None, usage=None, response=orjson.dumps(tools).decode()),
    ]


def main() -> None:
    events_dir = HERE / "events"
    events_dir.mkdir(exist_ok=True)
    builder = CorpusBuilder(seed=2026, month="2026-10", mix=LEGACY_MIX, max_stream_chunks=120)  # the mix the samples were made with
    gateway = write_jsonl(events_dir / "2026-10-gateway.jsonl.gz", builder.events(600))
    special = write_jsonl(events_dir / "2026-10-special-cases.jsonl", iter(special_cases(builder)))
    print(f"wrote {gateway} gateway events and {special} special cases to {events_dir}")


if __name__ == "__main__":
    main()
