"""Parse Bicep files with pycep-parser (run by the infra tools' Python, METERING_INFRA_PYTHON):
prints one JSON object, path → the parsed document, or {"error": message} for a file that does not
parse. Kept apart from the test process so that the project's venv needs no Bicep parser."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pycep import BicepParser


def main(paths: list[str]) -> int:
    parser = BicepParser()
    out: dict[str, object] = {}
    for path in paths:
        try:
            out[path] = parser.parse(text=Path(path).read_text(encoding="utf-8"))
        except Exception as exc:  # a parse failure is the answer for that file
            out[path] = {"error": f"{type(exc).__name__}: {str(exc)[:2000]}"}
    json.dump(out, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
