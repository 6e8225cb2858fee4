"""Public data stays out of the repository: what the tests read from the shared folder (recordings,
Retail Prices pages, Power BI schemas, APIM's allow-list) is listed in tests/data/origins.csv with
where it came from, and no tracked file is a copy of it (docs/public-data.md)."""

from __future__ import annotations

import csv
import hashlib
import subprocess
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from shared_folder import (APIM_ALLOWED_TYPES, POWERBI_SCHEMAS, RECORDINGS, REPOSITORY_ROOT, RETAIL_PRICES, missing, needs,
                           shared_dir, shared_path)

ORIGINS = REPOSITORY_ROOT / "tests" / "data" / "origins.csv"
#: Notes written for the shared folder (what it holds, how it was chosen), not data from elsewhere.
NOTES = {"README.md", "ORIGIN.md"}
SETS = {"calibration", "heldout", "retail-prices", "powerbi-schemas", "powerbi-bpa", "reference"}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def origins() -> list[dict[str, str]]:
    with ORIGINS.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def by_file() -> dict[str, list[dict[str, str]]]:
    rows = defaultdict(list)
    for row in origins():
        rows[row["file"]].append(row)
    return rows


def test_every_origin_row_says_what_and_from_where():
    rows = origins()
    assert len([r for r in rows if r["set"] in ("calibration", "heldout")]) >= 250
    for row in rows:
        assert row["set"] in SETS, row
        assert len(row["sha256"]) == 64 and int(row["sha256"], 16) >= 0, row
        assert row["repository"] or row["note"], f"{row['file']}: neither an origin nor a note saying why not"
        if row["set"] in ("calibration", "heldout"):
            assert row["file"].startswith(f"recordings/{row['set']}/"), row
            assert row["repository"] and len(row["commit"]) == 40 and row["path"].endswith((".yaml", ".yml")), row
            assert row["interaction"].isdigit(), row
    for file, rows_of_file in by_file().items():
        assert len({r["sha256"] for r in rows_of_file}) == 1, f"{file}: one file, one content"


def test_the_repository_holds_no_copy_of_the_public_data():
    """The rule behind the shared folder: no tracked file is one of the listed public files."""
    try:
        tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPOSITORY_ROOT, capture_output=True, check=True,
                                 timeout=60).stdout.decode().split("\0")
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"not a git checkout ({exc.__class__.__name__}): the tracked files cannot be listed")
    public = {row["sha256"]: row["file"] for row in origins()}
    copies = [f"{name} (= {public[digest]})" for name in tracked
              if name and (REPOSITORY_ROOT / name).is_file() and (digest := _sha256(REPOSITORY_ROOT / name)) in public]
    assert copies == [], "public data is read from the shared folder, not committed: " + ", ".join(copies)


@pytest.mark.parametrize("part", [RECORDINGS, RETAIL_PRICES, POWERBI_SCHEMAS, APIM_ALLOWED_TYPES])
def test_every_public_file_in_the_shared_folder_is_listed_with_its_content(part):
    """A file added to the shared folder gets its origin row; a changed one is noticed."""
    if reason := missing(part):
        pytest.skip(reason)
    root = shared_path(part)
    files = [root] if root.is_file() else [p for p in sorted(root.rglob("*")) if p.is_file() and p.name not in NOTES]
    listed = by_file()
    assert files
    for path in files:
        name = path.relative_to(shared_dir()).as_posix()
        assert name in listed, f"{name}: not in tests/data/origins.csv"
        assert _sha256(path) == listed[name][0]["sha256"], f"{name}: differs from the file origins.csv lists"


@needs(RECORDINGS)
def test_each_recording_names_the_origin_the_manifest_lists():
    for file, (row, *_) in by_file().items():
        path = shared_path(file)
        if row["set"] in ("calibration", "heldout") and path.is_file():
            origin = orjson.loads(path.read_bytes())["origin"]
            assert (origin["repository"], origin["commit"], origin["path"], str(origin["interaction"])) == (
                row["repository"], row["commit"], row["path"], row["interaction"]), file


def test_every_listed_file_is_in_the_shared_folder():
    """Skips (naming them) while listed files are still to be added to the shared folder."""
    if reason := missing(RECORDINGS):
        pytest.skip(reason)
    absent = sorted(file for file in by_file() if not shared_path(file).is_file())
    if absent:
        pytest.skip(f"listed but not yet in the shared folder: {', '.join(absent)}")
