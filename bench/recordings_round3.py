"""Rebuild issue #29's further recordings (``recordings-round3``) from git mirrors of their sources.

Run:
    .venv/bin/pip install -e ".[recordings]"   # PyYAML: the cassettes are vcrpy YAML
    .venv/bin/python bench/recordings_round3.py --mirror-root DIR --output DIR [--manifest FILE]

``--manifest`` is docs/estimates-sources.md (the default): its "Origins" table gives each repository's
commit, and its file table gives, per recording, the split, the file name, the repository, the
cassette's path and the interaction's index. ``--mirror-root`` holds one git directory per repository,
found as ``DIR/owner+name/repo``, ``DIR/owner+name``, ``DIR/owner/name`` or ``DIR/name`` (bare or not;
``git clone --mirror https://github.com/owner/name DIR/owner+name``); files are read with
``git show COMMIT:PATH``, so no checkout is needed. The recordings are written to
``--output/calibration/`` and ``--output/heldout/`` in the layout tests/recordings.py reads
(``METERING_EXTRA_RECORDINGS``, or ``../shared/recordings-round3/``).

Each file is the shared set's JSON (docs/public-data.md, "recordings/"): ``origin`` (repository, path,
commit, interaction), ``provider`` (``openai`` or ``azure``, from the recorded host), ``endpoint``,
``model`` (as the response names it), ``family`` and ``shape`` (the first two parts of the listed file
name), ``request`` (the recorded JSON body), ``response`` (the recorded body: JSON or SSE text),
``usage`` (the provider's usage object) and ``recorded`` (the response's ``Date`` header, when the
cassette kept it), written as ``json.dumps(indent=1, ensure_ascii=False)`` plus a newline, as the
shared set's files are. The name's last part is the first 8 hex digits of
``sha256(json.dumps(request, sort_keys=True) + json.dumps(usage, sort_keys=True))`` (the shared set's
names are exactly that); a rebuilt recording whose hash differs from its listed name is reported, and
the exit status is 1.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "docs" / "estimates-sources.md"
SPLITS = ("calibration", "heldout")

_ORIGIN_ROW = re.compile(r"^\| \[(?P<repository>[^\]]+)\]\([^)]*\) \| `(?P<commit>[0-9a-f]{40})` \|")
_FILE_ROW = re.compile(
    r"^\| (?P<split>calibration|heldout) \| `(?P<file>[^`]+\.json)` \| (?P<repository>[^ |]+) \| "
    r"`(?P<path>[^`]+)` \| (?P<interaction>\d+) \|\s*$"
)


@dataclass(frozen=True)
class ListedRecording:
    """One row of the manifest's file table."""

    split: str
    file: str
    repository: str
    commit: str
    path: str
    interaction: int

    @property
    def family(self) -> str:
        return self.file.split("--")[0]

    @property
    def shape(self) -> str:
        return self.file.split("--")[1]

    @property
    def listed_hash(self) -> str:
        return self.file.rsplit("--", 1)[1].removesuffix(".json")


def read_manifest(text: str) -> list[ListedRecording]:
    """The manifest's recordings, each with its repository's commit from the Origins table."""
    commits: dict[str, str] = {}
    rows = []
    for line in text.splitlines():
        if match := _ORIGIN_ROW.match(line):
            commits[match["repository"]] = match["commit"]
        elif match := _FILE_ROW.match(line):
            rows.append(match)
    missing = sorted({row["repository"] for row in rows} - commits.keys())
    if missing:
        raise ValueError(f"no commit listed for {', '.join(missing)}")
    return [
        ListedRecording(row["split"], row["file"], row["repository"], commits[row["repository"]], row["path"],
                        int(row["interaction"]))
        for row in rows
    ]


def git_dir(mirror_root: Path, repository: str) -> Path:
    owner, name = repository.split("/")
    for candidate in (mirror_root / f"{owner}+{name}" / "repo", mirror_root / f"{owner}+{name}",
                      mirror_root / owner / name, mirror_root / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no git mirror of {repository} under {mirror_root}")


def git_show(git: Path, commit: str, path: str) -> bytes:
    return subprocess.run(["git", f"--git-dir={git / '.git' if (git / '.git').is_dir() else git}", "show",
                           f"{commit}:{path}"], check=True, capture_output=True).stdout


def _header(headers: dict[str, Any] | None, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name:
            value = value[0] if isinstance(value, list) and value else value
            return value.decode() if isinstance(value, bytes) else str(value) if value is not None else None
    return None


def _text(body: Any, encoding: str | None) -> str:
    """A recorded body as text: vcrpy keeps it as text, or as (gzip/deflate-compressed) bytes."""
    if isinstance(body, dict):  # vcrpy's response body {"string": ...}
        body = body.get("string")
    if body is None:
        return ""
    if isinstance(body, str):
        return body
    if body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    elif encoding == "deflate":
        body = zlib.decompress(body)
    return body.decode("utf-8")


def _parsed(side: dict[str, Any], response: bool) -> str:
    """pydantic-ai's cassettes keep JSON bodies parsed (``parsed_body``): its serializer dumps them so."""
    if "parsed_body" in side and side["parsed_body"] is not None:
        return json.dumps(side["parsed_body"])
    return _text(side.get("body"), _header(side.get("headers"), "content-encoding") if response else None)


def _endpoint(path: str) -> str:
    for suffix, endpoint in (("/chat/completions", "chat.completions"), ("/responses", "responses"),
                             ("/completions", "completions")):
        if path.rstrip("/").endswith(suffix):
            return endpoint
    raise ValueError(f"not a text endpoint: {path}")


def _provider(host: str) -> str:
    if host == "api.openai.com":
        return "openai"
    if host.endswith(".openai.azure.com") or host.endswith(".cognitiveservices.azure.com"):
        return "azure"
    raise ValueError(f"not an OpenAI or Azure OpenAI host: {host}")


def _sse_payloads(text: str) -> list[dict[str, Any]]:
    payloads = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.startswith("data:") and (data := line[5:].strip()) and data != "[DONE]":
            try:
                payload = json.loads(data)
            except json.JSONDecodeError:
                continue
            if isinstance(payload, dict):
                payloads.append(payload)
    return payloads


def model_and_usage(response: str) -> tuple[str, dict[str, Any]]:
    """The model the response names and the provider's usage: a JSON body's, a stream's last usage
    chunk's, or ``response.completed``'s."""
    if not response.lstrip().startswith(("data:", "event:")):
        body = json.loads(response)
        if "usage" not in body and isinstance(body.get("response"), dict):
            body = body["response"]
        return body.get("model") or "", body["usage"]
    model, usage = "", None
    for payload in _sse_payloads(response):
        inner = payload.get("response") if isinstance(payload.get("response"), dict) else payload
        model = model or inner.get("model") or ""
        if inner.get("usage"):
            usage = inner["usage"]
    if usage is None:
        raise ValueError("the stream carries no usage")
    return model, usage


def name_hash(request: dict[str, Any], usage: dict[str, Any]) -> str:
    """The file name's last part, as the shared set's names are made."""
    key = json.dumps(request, sort_keys=True) + json.dumps(usage, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def rebuild(listed: ListedRecording, interaction: dict[str, Any]) -> dict[str, Any]:
    """The recording's JSON object from its cassette interaction."""
    request_side, response_side = interaction["request"], interaction["response"]
    uri = urlsplit(request_side["uri"])
    request = json.loads(_parsed(request_side, response=False))
    response = _parsed(response_side, response=True)
    model, usage = model_and_usage(response)
    recording: dict[str, Any] = {
        "origin": {"repository": listed.repository, "path": listed.path, "commit": listed.commit,
                   "interaction": listed.interaction},
        "provider": _provider(uri.hostname or ""),
        "endpoint": _endpoint(uri.path),
        "model": model,
        "family": listed.family,
        "shape": listed.shape,
        "request": request,
        "response": response,
        "usage": usage,
    }
    if (date := _header(response_side.get("headers"), "date")) is not None:
        recording["recorded"] = date
    return recording


def serialize(recording: dict[str, Any]) -> bytes:
    return (json.dumps(recording, indent=1, ensure_ascii=False) + "\n").encode()


def load_cassette(data: bytes) -> dict[str, Any]:
    import yaml  # only this tool needs it (pip install pyyaml)

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(data, Loader=loader)


def build(listed_recordings: list[ListedRecording], mirror_root: Path, output: Path
          ) -> tuple[dict[ListedRecording, str], list[str]]:
    """Write every listed recording under ``output``: the name each was written under (its family,
    shape and ``name_hash``), and the recordings that could not be rebuilt, with why."""
    written: dict[ListedRecording, str] = {}
    problems = []
    cassettes: dict[tuple[str, str], dict[str, Any]] = {}
    for split in SPLITS:
        (output / split).mkdir(parents=True, exist_ok=True)
    for listed in listed_recordings:
        key = (listed.repository, listed.path)
        try:
            if key not in cassettes:
                cassettes[key] = load_cassette(git_show(git_dir(mirror_root, listed.repository), listed.commit,
                                                        listed.path))
            recording = rebuild(listed, cassettes[key]["interactions"][listed.interaction])
        except (FileNotFoundError, subprocess.CalledProcessError, ValueError, KeyError, IndexError) as error:
            problems.append(f"{listed.split}/{listed.file}: not rebuilt: {error!r}")
            continue
        name = f"{listed.family}--{listed.shape}--{name_hash(recording['request'], recording['usage'])}.json"
        if name in {other for done, other in written.items() if done.split == listed.split}:
            problems.append(f"{listed.split}/{listed.file}: the same request and usage as another listed recording")
            continue
        written[listed] = name
        (output / listed.split / name).write_bytes(serialize(recording))
    return written, problems


def renamed_manifest(text: str, written: dict[ListedRecording, str]) -> str:
    """The manifest with its file table's names as written (rows sorted by split and name again)."""
    lines = text.splitlines(keepends=True)
    rows = [i for i, line in enumerate(lines) if _FILE_ROW.match(line)]
    by_row = {(row.split, row.file, row.repository, row.path, row.interaction): name for row, name in written.items()}
    table = []
    for i in rows:
        match = _FILE_ROW.match(lines[i])
        name = by_row.get((match["split"], match["file"], match["repository"], match["path"],
                           int(match["interaction"])), match["file"])
        table.append((SPLITS.index(match["split"]), name,
                      lines[i].replace(f"`{match['file']}`", f"`{name}`", 1)))
    for i, (_, _, line) in zip(rows, sorted(table)):
        lines[i] = line
    return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mirror-root", type=Path, required=True,
                        help="folder of git mirrors: owner+name/repo, owner+name, owner/name or name")
    parser.add_argument("--output", type=Path, required=True, help="writes OUTPUT/calibration and OUTPUT/heldout")
    parser.add_argument("--manifest", type=Path, default=MANIFEST, help="default: docs/estimates-sources.md")
    parser.add_argument("--update-manifest", action="store_true",
                        help="rewrite the manifest's file names to the names written")
    args = parser.parse_args(argv)
    text = args.manifest.read_text(encoding="utf-8")
    listed = read_manifest(text)
    written, problems = build(listed, args.mirror_root, args.output)
    renamed = {row: name for row, name in written.items() if name != row.file}
    for problem in problems:
        print(problem, file=sys.stderr)
    for row, name in renamed.items():
        print(f"{row.split}/{row.file}: written as {name}", file=sys.stderr)
    counts = {split: sum(1 for row in written if row.split == split) for split in SPLITS}
    print(f"{len(written)} of {len(listed)} recordings rebuilt into {args.output} ({counts['calibration']} "
          f"calibration, {counts['heldout']} held-out); {len(renamed)} under another name than the manifest's")
    if args.update_manifest and renamed:
        args.manifest.write_text(renamed_manifest(text, written), encoding="utf-8")
        print(f"{args.manifest}: {len(renamed)} file names updated")
        renamed = {}
    return 1 if problems or renamed else 0


if __name__ == "__main__":
    sys.exit(main())
