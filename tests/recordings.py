"""Real provider recordings (``recordings/`` of the shared folder) replayed through the estimator.

Each recording is one request to OpenAI or Azure OpenAI with the provider's own ``usage``, taken
from a public repository's test cassette (origins in tests/data/origins.csv; the files are not in
the repository: docs/public-data.md). Replaying
one means: remove every trace of the provider's usage from the response (the JSON body's
``usage``, a stream's final ``include_usage`` chunk, ``response.completed``'s usage), feed the
request and the stripped response through ``resolve_usage`` as an APIM event, and compare the
estimate with what the provider reported.

Hidden reasoning is never in a response, so the completion is compared with the provider's
*visible* output (``completion_tokens − reasoning_tokens``); the estimate for a reasoning model
is a lower bound by exactly the reasoning tokens, and says so in its notes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from datetime import UTC, datetime
from typing import Any

import orjson

from metering.model import TokenUsage, UsageEvent
from metering.usage.resolve import resolve_usage
from shared_folder import RECORDINGS, shared_path

RECORDINGS_DIR = shared_path(RECORDINGS)
SPLITS = ("calibration", "heldout")
#: A further folder of recordings (same ``calibration/`` and ``heldout/`` layout and fields: issue
#: #29's, docs/estimates-sources.md), read by ``load_recordings(..., extra=True)``: the folder
#: ``METERING_EXTRA_RECORDINGS`` names, else ``../shared/recordings-round3`` beside the checkout.
EXTRA_RECORDINGS_ENV = "METERING_EXTRA_RECORDINGS"
SHARED_EXTRA_RECORDINGS = shared_path("recordings-round3")


def extra_recordings_dir() -> Path | None:
    """The further recordings' folder, when there is one."""
    value = os.environ.get(EXTRA_RECORDINGS_ENV)
    folder = Path(value) if value else SHARED_EXTRA_RECORDINGS
    return folder if folder.is_dir() else None


@dataclass(frozen=True)
class Recording:
    """One recorded request with the provider's reported usage."""

    name: str
    split: str
    origin: dict[str, Any]
    provider: str
    endpoint: str
    model: str
    family: str
    shape: str
    request: dict[str, Any]
    response: str
    usage: dict[str, Any]

    @property
    def reported_prompt(self) -> int:
        return int(self.usage.get("input_tokens", self.usage.get("prompt_tokens", 0)) or 0)

    @property
    def reported_completion(self) -> int:
        return int(self.usage.get("output_tokens", self.usage.get("completion_tokens", 0)) or 0)

    @property
    def reported_reasoning(self) -> int:
        details = self.usage.get("output_tokens_details") or self.usage.get("completion_tokens_details") or {}
        return int(details.get("reasoning_tokens") or 0)

    @property
    def reported_visible_completion(self) -> int:
        """Completion tokens the response shows: the reported ones less hidden reasoning."""
        return self.reported_completion - self.reported_reasoning


def load_recordings(split: str | None = None, *, extra: bool = False) -> list[Recording]:
    """Every recording of ``split`` (``calibration`` or ``heldout``; both when None), by name;
    ``extra``: those of the further recordings (none when there are none).

    A split's folder of the shared recordings that is not there is an error, never an empty list
    (callers skip first).
    """
    recordings = []
    root = extra_recordings_dir() if extra else RECORDINGS_DIR
    if root is None:
        return []
    for name in SPLITS if split is None else (split,):
        folder = root / name
        if not folder.is_dir():
            raise FileNotFoundError(f"no recordings at {folder} (docs/public-data.md)")
        for path in sorted(folder.glob("*.json")):
            data = orjson.loads(path.read_bytes())
            recordings.append(
                Recording(
                    name=path.stem,
                    split=name,
                    origin=data["origin"],
                    provider=data["provider"],
                    endpoint=data["endpoint"],
                    model=data["model"],
                    family=data["family"],
                    shape=data["shape"],
                    request=data["request"],
                    response=data["response"],
                    usage=data["usage"],
                )
            )
    return recordings


def _without_usage(payload: dict[str, Any]) -> dict[str, Any]:
    payload = dict(payload)
    payload.pop("usage", None)
    if isinstance(payload.get("response"), dict):
        payload["response"] = {k: v for k, v in payload["response"].items() if k != "usage"}
    return payload


def strip_usage(response: str) -> str:
    """The response as a capture without usage would carry it (body or SSE text)."""
    if not response.lstrip().startswith(("data:", "event:")):
        return orjson.dumps(_without_usage(orjson.loads(response))).decode()
    blocks = []
    for block in response.replace("\r\n", "\n").split("\n\n"):
        lines = []
        for line in block.split("\n"):
            data = line[5:].strip() if line.startswith("data:") else ""
            if data and data != "[DONE]":
                try:
                    payload = orjson.loads(data)
                except orjson.JSONDecodeError:
                    payload = None
                if isinstance(payload, dict):
                    if "choices" in payload and not payload["choices"] and payload.get("usage"):
                        lines = []  # the include_usage chunk: a capture without usage has none
                        break
                    line = "data: " + orjson.dumps(_without_usage(payload)).decode()
            lines.append(line)
        if lines:
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n\n"


_CREATED = re.compile(r'"created(?:_at)?"\s*:\s*([1-9][0-9]{8,10})')


def recorded_at(recording: Recording) -> datetime:
    """When the provider answered: the response's ``created`` time (2026-01-01 when it has none)."""
    match = _CREATED.search(recording.response)
    return datetime.fromtimestamp(int(match.group(1)), UTC) if match else datetime(2026, 1, 1, tzinfo=UTC)


#: where each provider's recordings were served from (the estimate depends on it: AZURE_TERMINATOR_TOKENS)
BACKEND_URLS = {"azure": "https://contoso.openai.azure.com/openai", "openai": "https://api.openai.com/v1"}


def replay(recording: Recording, *, deployment: str = "chat-prod", model_hint: str | None = None) -> TokenUsage:
    """The estimate for a recording whose usage was stripped, as the pipeline would compute it."""
    event = UsageEvent(
        request_id=f"recording-{recording.name}",
        backend_url=BACKEND_URLS.get(recording.provider),
        event_time=recorded_at(recording),
        deployment=deployment,
        status_code=200,
        endpoint=recording.endpoint,
        capture="full",
        is_streaming=bool(recording.request.get("stream")),
        request=recording.request,
        response=strip_usage(recording.response),
    )
    return resolve_usage(event, model_hint=model_hint)


@dataclass(frozen=True)
class Miss:
    """Estimate minus reported, for the prompt and the visible completion."""

    prompt: int
    completion: int

    @property
    def exact(self) -> bool:
        return self.prompt == 0 and self.completion == 0


def miss(recording: Recording) -> Miss:
    usage = replay(recording)
    return Miss(usage.prompt_tokens - recording.reported_prompt, usage.completion_tokens - recording.reported_visible_completion)


#: What an estimate had to count beyond plain messages, most specific first (bench_accuracy.py's
#: table by cause): the first that applies names the recording's row.
CAUSES = ("response format", "tool results", "tool-call history", "forced call", "tools offered", "n > 1",
          "stream", "plain")


def cause(recording: Recording) -> str:
    """The cause a recording's estimate is filed under (``CAUSES``)."""
    request = recording.request
    text = request.get("text")
    response_format = request.get("response_format") or (text.get("format") if isinstance(text, dict) else None)
    history = request.get("messages") or (request.get("input") if isinstance(request.get("input"), list) else [])
    history = [item for item in history if isinstance(item, dict)]
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        return "response format"
    if any(item.get("role") in ("tool", "function") or item.get("type") == "function_call_output" for item in history):
        return "tool results"
    if any(item.get("tool_calls") or item.get("type") == "function_call" for item in history):
        return "tool-call history"
    choice = request.get("tool_choice")
    if request.get("tools") and (choice == "required" or isinstance(choice, dict)):
        return "forced call"
    if request.get("tools") or request.get("functions"):
        return "tools offered"
    if isinstance(request.get("n"), int) and request["n"] > 1:
        return "n > 1"
    return "stream" if request.get("stream") else "plain"
