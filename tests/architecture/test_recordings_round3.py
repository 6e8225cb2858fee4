"""bench/recordings_round3.py rebuilds issue #29's further recordings from the manifest in
docs/estimates-sources.md: the manifest is whole and consistent, and one cassette interaction becomes
the recording the tests read (docs/estimates-sources.md, "Rebuilding them")."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter

import pytest

from bench.recordings_round3 import (MANIFEST, ListedRecording, name_hash, read_manifest, rebuild,
                                     renamed_manifest, serialize)
from shared_folder import RECORDINGS, missing, shared_path


def test_the_manifest_lists_every_recording_once_with_its_repositorys_commit():
    text = MANIFEST.read_text(encoding="utf-8")
    listed = read_manifest(text)
    assert len(listed) == sum(1 for line in text.splitlines() if line.startswith(("| calibration |", "| heldout |")))
    assert len({(row.split, row.file) for row in listed}) == len(listed)
    assert len({(row.repository, row.path, row.interaction) for row in listed}) == len(listed)
    # the Origins table's counts are those of the file table
    counted = Counter((row.repository, row.split) for row in listed)
    for match in re.finditer(r"^\| \[([^\]]+)\]\([^)]*\) \| `[0-9a-f]{40}` \| (\d+) \| (\d+) \|$", text, re.M):
        assert (counted[match[1], "calibration"], counted[match[1], "heldout"]) == (int(match[2]), int(match[3]))
    # split by source: no repository path is on both sides
    assert not {row.path for row in listed if row.split == "heldout"} & {row.path for row in listed if row.split == "calibration"}


def test_a_manifest_without_a_repositorys_commit_is_refused():
    row = "| heldout | `gpt-4o--chat--00000000.json` | someone/else | `tests/cassette.yaml` | 0 |"
    with pytest.raises(ValueError, match="someone/else"):
        read_manifest(row)


LISTED = ListedRecording("heldout", "gpt-4o--chat-stream--00000000.json", "o/r", "c" * 40, "tests/c.yaml", 1)
REQUEST = {"messages": [{"role": "user", "content": "Hi"}], "model": "gpt-4o", "stream": True,
           "stream_options": {"include_usage": True}}
USAGE = {"prompt_tokens": 8, "completion_tokens": 3, "total_tokens": 11}
STREAM = (
    'data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[]}\n\n'
    'data: {"choices":[{"delta":{"content":"Hello"},"index":0}],"model":"gpt-4o-2024-11-20"}\n\n'
    'data: {"choices":[{"delta":{},"finish_reason":"stop","index":0}],"model":"gpt-4o-2024-11-20"}\n\n'
    f'data: {{"choices":[],"model":"gpt-4o-2024-11-20","usage":{json.dumps(USAGE)}}}\n\n'
    "data: [DONE]\n\n"
)


def test_an_azure_stream_recorded_gzipped_becomes_its_recording():
    interaction = {
        "request": {"body": json.dumps(REQUEST).encode(), "method": "POST",
                    "uri": "https://contoso.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"},
        "response": {"body": {"string": gzip.compress(STREAM.encode())},
                     "headers": {"Content-Encoding": ["gzip"], "Date": ["Tue, 13 Jan 2026 10:00:00 GMT"]},
                     "status": {"code": 200}},
    }
    recording = rebuild(LISTED, interaction)
    assert recording == {
        "origin": {"repository": "o/r", "path": "tests/c.yaml", "commit": "c" * 40, "interaction": 1},
        "provider": "azure", "endpoint": "chat.completions", "model": "gpt-4o-2024-11-20", "family": "gpt-4o",
        "shape": "chat-stream", "request": REQUEST, "response": STREAM, "usage": USAGE,
        "recorded": "Tue, 13 Jan 2026 10:00:00 GMT",
    }
    assert list(recording) == ["origin", "provider", "endpoint", "model", "family", "shape", "request", "response",
                               "usage", "recorded"]


def test_a_parsed_body_cassette_is_dumped_as_its_serializer_does():
    """pydantic-ai's cassettes keep JSON bodies parsed; its serializer replays them as ``json.dumps``."""
    body = {"id": "resp_1", "model": "gpt-4.1-2025-04-14", "output": [], "usage": {"input_tokens": 9, "output_tokens": 2}}
    interaction = {"request": {"parsed_body": {"input": "Hi", "model": "gpt-4.1"}, "uri": "https://api.openai.com/v1/responses"},
                   "response": {"parsed_body": body, "headers": {}}}
    recording = rebuild(LISTED, interaction)
    assert (recording["provider"], recording["endpoint"], recording["model"]) == ("openai", "responses", "gpt-4.1-2025-04-14")
    assert recording["response"] == json.dumps(body) and recording["usage"] == body["usage"]
    assert "recorded" not in recording  # the cassette did not keep the Date header


def test_an_interaction_with_another_host_is_not_a_recording():
    interaction = {"request": {"body": "{}", "uri": "https://api.example.com/v1/chat/completions"},
                   "response": {"body": {"string": json.dumps({"usage": USAGE})}, "headers": {}}}
    with pytest.raises(ValueError, match="api.example.com"):
        rebuild(LISTED, interaction)


def test_the_manifest_is_renamed_to_the_names_written_and_sorted_again():
    text = ("| split | file | repository | path | interaction |\n|---|---|---|---|---|\n"
            "| calibration | `gpt-4o--chat--aaaaaaaa.json` | o/r | `a.yaml` | 0 |\n"
            "| calibration | `gpt-4o--chat--bbbbbbbb.json` | o/r | `b.yaml` | 0 |\n")
    rows = [ListedRecording("calibration", "gpt-4o--chat--aaaaaaaa.json", "o/r", "c" * 40, "a.yaml", 0)]
    renamed = renamed_manifest(text, {rows[0]: "gpt-4o--chat--ffffffff.json"})
    assert renamed.splitlines()[2:] == ["| calibration | `gpt-4o--chat--bbbbbbbb.json` | o/r | `b.yaml` | 0 |",
                                        "| calibration | `gpt-4o--chat--ffffffff.json` | o/r | `a.yaml` | 0 |"]


@pytest.mark.skipif(missing(RECORDINGS) is not None, reason=missing(RECORDINGS) or "")
def test_names_and_bytes_are_made_as_the_shared_sets_are():
    """The shared set's files are this serialization of themselves, named by this hash."""
    for path in sorted(shared_path(RECORDINGS).glob("*/*.json"))[:40]:
        recording = json.loads(path.read_bytes())
        assert serialize(recording) == path.read_bytes(), path.name
        assert path.stem.rsplit("--", 1)[1] == name_hash(recording["request"], recording["usage"]), path.name
