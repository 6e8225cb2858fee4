"""Deterministic corpus of realistic ``aoai-usage/1`` events, for the benchmark and the demo samples.

The default mix follows what a busy gateway sends: 58% non-streaming chat with usage, 27% streams
(20–400 text events, request attached so the prompt can be counted: one of three system prompts
and a user turn no other request shares) in the wire shapes Azure and
OpenAI really send, 10% embeddings, 5% bad or truncated events; several subscriptions, deployments
and models. The streams, by shape (share of all events):

* without usage (counted from the rebuilt text), 19%: Azure 2024–25, keys sorted with
  content-filter results on every chunk, 6%; the seed captures' order (``id, object, created,
  model, choices``), 4%; Azure 2025–26 minimal chunks with an ``obfuscation`` pad, 6%;
  api.openai.com chunks (``service_tier``, ``usage: null``, ``obfuscation``), 3%;
* with their usage, 8%: Azure sorted with the ``include_usage`` chunk, 2%; api.openai.com with it,
  2%; Responses API events (``event:`` + ``data:``, ``sequence_number``, ``obfuscation``, usage in
  ``response.completed``), 4%.

``LEGACY_MIX`` is the mix before issue 28 (all streams in the sorted Azure shape: 20% without
usage, 5% with it), which the demo samples were generated with. The same seed and mix always give
the same bytes.
"""

from __future__ import annotations

import random
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import azure_shapes  # noqa: E402  (Azure's wire shapes, shared with the tests)

SUBSCRIPTIONS = [
    ("sub-finance-analytics", "Finance Analytics"),
    ("sub-customer-care-bot", "Customer Care Bot"),
    ("sub-legal-review", "Legal Review"),
    ("sub-marketing-content", "Marketing Content"),
    ("sub-engineering-copilot", "Engineering Copilot"),
    ("sub-data-science-lab", "Data Science Lab"),
]

# (deployment, response model, backend id, backend region, weight)
CHAT_DEPLOYMENTS = [
    ("gpt-4o", "gpt-4o-2024-11-20", "aoai-swedencentral", "Sweden Central", 5),
    ("chat-prod", "gpt-4o-mini-2024-07-18", "aoai-westeurope", "West Europe", 6),
    ("gpt-4.1", "gpt-4.1-2025-04-14", "aoai-eastus2", "East US 2", 3),
    ("gpt-4.1-mini", "gpt-4.1-mini-2025-04-14", "aoai-eastus2", "East US 2", 3),
    ("o4-mini", "o4-mini-2025-04-16", "aoai-swedencentral", "Sweden Central", 2),
    ("gpt-5-mini", "gpt-5-mini-2025-08-07", "aoai-eastus2", "East US 2", 2),
    ("gpt-35-turbo", "gpt-35-turbo", "aoai-westeurope", "West Europe", 1),
    ("gpt-4o-ptu", "gpt-4o-2024-08-06", "aoai-ptu-swedencentral", "Sweden Central", 2),
]
EMBEDDING_DEPLOYMENTS = [
    ("text-embedding-3-small", "text-embedding-3-small", "aoai-westeurope", "West Europe"),
    ("text-embedding-3-large", "text-embedding-3-large", "aoai-swedencentral", "Sweden Central"),
]

SYSTEM_PROMPTS = [
    "You are a helpful assistant for Contoso employees. Answer concisely and cite internal policy where relevant.",
    "You are a customer-care agent for Contoso Energy. Be polite, never promise refunds, and escalate billing disputes.",
    "You review contracts for the legal team. Flag unusual indemnity, liability caps and termination clauses.",
]
USER_PROMPTS = [
    "Summarise the attached quarterly cost report for the steering committee in five bullet points.",
    "Draft a reply to a customer who was billed twice for October and wants the duplicate charge reversed.",
    "Which clauses in this supplier agreement deviate from our standard template? Quote them.",
    "Write a product description for our new smart thermostat, 80 words, friendly tone, mention the app.",
    "Explain why this Python function leaks memory when called in a loop, and propose a fix.",
    "Translate the following paragraph into German and French: 'Our offices close at 5 pm on Fridays.'",
    "¿Puedes resumir este informe de ventas en tres frases para el equipo de dirección?",
    "请把这段会议记录整理成行动项清单，并标出负责人。",
]
ANSWER_WORDS = (
    " The quarterly report shows that spending on Azure OpenAI grew by 18 percent, driven mainly by the customer-care"
    " assistant. Cached prompts reduced input costs noticeably; the legal team's review workload stayed flat."
    " Recommendation: move the high-volume chat traffic to gpt-4o-mini and keep gpt-4o for complex cases."
    " Über die Hälfte der Anfragen kam aus Europa — 数据 shows a similar trend."
).split(" ")


@dataclass(frozen=True)
class Mix:
    """Shares of each kind of event (they add up to 1); streams by wire shape."""

    chat_with_usage: float = 0.58
    azure_sorted: float = 0.06  # streams without usage...
    azure_sorted_usage: float = 0.02  # ... and with the include_usage chunk
    seed_order: float = 0.04
    minimal_obfuscation: float = 0.06
    openai: float = 0.03
    openai_usage: float = 0.02
    responses: float = 0.04
    embeddings: float = 0.10
    bad: float = 0.05

    def streams(self) -> tuple[tuple[str, float], ...]:
        """(shape, share) of every stream shape, in the order the roll is read."""
        return (("azure_sorted", self.azure_sorted), ("azure_sorted_usage", self.azure_sorted_usage),
                ("seed_order", self.seed_order), ("minimal_obfuscation", self.minimal_obfuscation),
                ("openai", self.openai), ("openai_usage", self.openai_usage), ("responses", self.responses))


LEGACY_MIX = Mix(chat_with_usage=0.60, azure_sorted=0.20, azure_sorted_usage=0.05, seed_order=0.0,
                 minimal_obfuscation=0.0, openai=0.0, openai_usage=0.0, responses=0.0)


def _answer_pieces(rng: random.Random, count: int) -> list[str]:
    start = rng.randrange(len(ANSWER_WORDS))
    return [(" " if i else "") + ANSWER_WORDS[(start + i) % len(ANSWER_WORDS)] for i in range(count)]


def _chat_request(rng: random.Random, stream: bool, include_usage: bool = False) -> dict[str, Any]:
    request: dict[str, Any] = {
        "messages": [
            {"role": "system", "content": rng.choice(SYSTEM_PROMPTS)},
            # A user turn is the user's own: the same request with its own case number, so that no
            # two requests share it (a count kept for one is no use to the next), while the system
            # prompt is one of an app's few, as in real traffic.
            {"role": "user", "content": f"{rng.choice(USER_PROMPTS)} (case {rng.randrange(10**8):08d})"},
        ],
        "max_tokens": 800,
        "temperature": 0.2,
    }
    if stream:
        request["stream"] = True
        if include_usage:
            request["stream_options"] = {"include_usage": True}
    return request


class CorpusBuilder:
    """Builds events for one month; ``event(i)`` is deterministic in (seed, i)."""

    def __init__(self, seed: int = 7, month: str = "2026-10", mix: Mix = Mix(), max_stream_chunks: int = 400):
        self.seed = seed
        year, month_number = (int(p) for p in month.split("-"))
        self.start = datetime(year, month_number, 1, tzinfo=timezone.utc)
        self.mix = mix
        self.max_stream_chunks = max_stream_chunks

    def _header(self, rng: random.Random, index: int, deployment: str, backend: str, region: str,
                operation: str, model: str | None) -> dict[str, Any]:
        subscription_id, subscription_name = SUBSCRIPTIONS[rng.randrange(len(SUBSCRIPTIONS))]
        moment = self.start + timedelta(seconds=rng.randrange(27 * 86400))
        return {
            "schema": "aoai-usage/1",
            "requestId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "time": moment.isoformat().replace("+00:00", "Z"),
            "gateway": {"service": "apim-contoso-ai", "region": "West Europe"},
            "subscription": {"id": subscription_id, "name": subscription_name},
            "product": "ai-standard" if index % 5 else "ai-premium",
            "api": "azure-openai",
            "operation": operation,
            "user": None,
            "clientIp": f"10.20.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            "attributes": {"x-app-id": f"app-{rng.randrange(12):02d}"},
            "backend": {"id": backend, "url": f"https://{backend}.openai.azure.com/openai", "region": region},
            "deployment": deployment,
            "apiVersion": "2024-10-21",
            "status": 200,
            "durationMs": rng.randrange(180, 9000),
            "stream": False,
            "capture": "usage",
            "model": model,
            "usage": None,
            "request": None,
            "response": None,
        }

    def _chat(self, rng: random.Random, index: int) -> dict[str, Any]:
        deployment, model, backend, region, _ = rng.choices(CHAT_DEPLOYMENTS, weights=[d[4] for d in CHAT_DEPLOYMENTS])[0]
        event = self._header(rng, index, deployment, backend, region, "ChatCompletions_Create", model)
        prompt = rng.randrange(60, 6000)
        completion = rng.randrange(20, 1200)
        cached = (prompt // 1024) * 1024 if prompt >= 1024 and rng.random() < 0.3 else 0
        reasoning = rng.randrange(0, completion) if model.startswith(("o4", "gpt-5")) else 0
        event["usage"] = azure_shapes.usage_object(prompt, completion, cached=cached, reasoning=reasoning)
        roll = rng.random()
        if roll < 0.03:
            event["status"], event["usage"] = 429, None
        elif roll < 0.04:
            event["status"], event["usage"] = 500, None
        return event

    def _stream(self, rng: random.Random, index: int, with_usage: bool, shape: str = "azure_sorted") -> dict[str, Any]:
        choices = [d for d in CHAT_DEPLOYMENTS if d[0] != "gpt-4o-ptu"]
        deployment, model, backend, region, _ = rng.choices(choices, weights=[d[4] for d in choices])[0]
        operation = "Responses_Create" if shape == "responses" else "ChatCompletions_Create"
        event = self._header(rng, index, deployment, backend, region, operation, model)
        chunks = rng.randrange(20, self.max_stream_chunks + 1)
        pieces = _answer_pieces(rng, chunks)
        prompt = rng.randrange(40, 3000) if with_usage else 0
        request = _chat_request(rng, True, with_usage)
        if shape == "azure_sorted":
            usage = azure_shapes.usage_object(prompt, chunks) if with_usage else None
            response = azure_shapes.chat_stream(pieces, model=model, usage=usage)
        elif shape == "seed_order":
            response = azure_shapes.seed_order_stream(pieces, model=model)
        elif shape == "minimal_obfuscation":
            response = azure_shapes.minimal_stream(pieces, model=model)
        elif shape == "openai":
            response = azure_shapes.openai_stream(pieces, model=model, usage=azure_shapes.usage_object(prompt, chunks) if with_usage else None)
        else:  # the Responses API: instructions and input instead of messages, usage in response.completed
            messages = request.pop("messages")
            request.pop("stream_options", None)
            request.update(instructions=messages[0]["content"], input=[{"role": "user", "content": messages[1]["content"]}],
                           max_output_tokens=request.pop("max_tokens"))
            event["apiVersion"] = "2025-04-01-preview"
            response = azure_shapes.responses_stream(pieces, model=model, usage=azure_shapes.responses_usage(prompt, chunks),
                                                     obfuscation=True)
        event.update(stream=True, capture="full", request=request, response=response)
        return event

    def _embedding(self, rng: random.Random, index: int) -> dict[str, Any]:
        deployment, model, backend, region = rng.choice(EMBEDDING_DEPLOYMENTS)
        event = self._header(rng, index, deployment, backend, region, "embeddings_create", model)
        tokens = rng.randrange(8, 8000)
        event["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return event

    def _bad(self, rng: random.Random, index: int) -> bytes:
        kind = rng.randrange(4)
        if kind == 0:  # cut by APIM's 200 KB limit or a broken capture: not JSON any more
            body = orjson.dumps(self._stream(rng, index, with_usage=False))
            return body[: max(40, len(body) * rng.randrange(30, 90) // 100)]
        if kind == 1:
            return b"\x00\x01 binary junk \xff\xfe"
        if kind == 2:
            event = self._chat(rng, index)
            event["requestId"] = None
            return orjson.dumps(event)
        event = self._chat(rng, index)
        event["status"] = "two hundred"
        return orjson.dumps(event)

    def event(self, index: int) -> bytes:
        rng = random.Random(self.seed * 1_000_003 + index)
        roll = rng.random()
        mix = self.mix
        if roll < mix.chat_with_usage:
            return orjson.dumps(self._chat(rng, index))
        roll -= mix.chat_with_usage
        for shape, share in mix.streams():
            if roll < share:
                with_usage = shape.endswith("_usage") or shape == "responses"
                return orjson.dumps(self._stream(rng, index, with_usage, shape.removesuffix("_usage")))
            roll -= share
        if roll < mix.embeddings:
            return orjson.dumps(self._embedding(rng, index))
        return self._bad(rng, index)

    def events(self, count: int, start: int = 0) -> Iterator[bytes]:
        for index in range(start, start + count):
            yield self.event(index)


def write_jsonl(path: Path, events: Iterator[bytes]) -> int:
    """Write events one per line (gzip when the name ends in .gz); returns the count."""
    import gzip

    count = 0
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wb") as out:  # type: ignore[operator]
        for body in events:
            out.write(body + b"\n")
            count += 1
    return count


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Write a deterministic corpus of metering events as JSONL.")
    parser.add_argument("output", type=Path)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--month", default="2026-10")
    args = parser.parse_args()
    written = write_jsonl(args.output, CorpusBuilder(args.seed, args.month).events(args.events))
    print(f"wrote {written:,} events to {args.output}")
