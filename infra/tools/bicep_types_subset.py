"""Copy, from a clone of the public Azure/bicep-types-az repository, the generated type files
(``generated/<folder>/<namespace>/<apiVersion>/types.json``) of every ``type@apiVersion`` that the
repository's Bicep files declare, and write ``ORIGIN`` (repository and commit) beside them.

    python infra/tools/bicep_types_subset.py --source /path/to/bicep-types-az --output DIR

``--source`` is a checkout or a bare git directory. ``tests/infra/test_bicep.py`` reads DIR from
``METERING_BICEP_TYPES_DIR``: every resource's type, API version, property names, required and
read-only properties are checked against these files, offline. Nothing of that repository is
committed here; CI finds the subset in the shared folder (docs/deployment.md, "Verified offline").
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESOURCE = re.compile(r"""^\s*resource\s+\w+\s+'([A-Za-z0-9.]+/[A-Za-z0-9./]+)@([0-9]{4}-[0-9]{2}-[0-9]{2}(?:-preview)?)'""",
                      re.MULTILINE)


def declared_types(root: Path = ROOT) -> set[tuple[str, str]]:
    """Every (type, apiVersion) of a ``resource`` declaration in infra/ and policy/."""
    found: set[tuple[str, str]] = set()
    for path in sorted([*root.glob("infra/**/*.bicep"), *root.glob("policy/*.bicep")]):
        found.update(RESOURCE.findall(path.read_text(encoding="utf-8")))
    return found


def _git(source: Path, *args: str) -> str:
    return subprocess.run(["git", f"--git-dir={source}", *args], capture_output=True, text=True, check=True,
                          timeout=300).stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="bicep-types-az checkout or bare git directory")
    parser.add_argument("--output", type=Path, required=True, help="folder to write the subset to")
    args = parser.parse_args(argv)
    git_dir = args.source / ".git" if (args.source / ".git").exists() else args.source
    commit = _git(git_dir, "rev-parse", "HEAD").strip()
    files = _git(git_dir, "ls-tree", "-r", "--name-only", "HEAD", "generated").splitlines()
    wanted = declared_types()
    copied: set[str] = set()
    for type_name, version in sorted(wanted):
        namespace = type_name.split("/")[0].lower()
        suffix = f"/{namespace}/{version}/types.json"
        candidates = [f for f in files if f.startswith("generated/") and f.endswith(suffix)]
        hit = None
        for candidate in candidates:
            text = _git(git_dir, "show", f"HEAD:{candidate}")
            if f'"{type_name}@{version}"'.lower() in text.lower():
                hit = candidate
                break
        if hit is None:
            print(f"not in bicep-types-az at {commit[:12]}: {type_name}@{version}", file=sys.stderr)
            continue
        if hit not in copied:
            target = args.output / hit.removeprefix("generated/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(_git(git_dir, "show", f"HEAD:{hit}"), encoding="utf-8")
            copied.add(hit)
    (args.output / "ORIGIN").write_text(
        f"repository: https://github.com/Azure/bicep-types-az\ncommit: {commit}\nfiles:\n"
        + "".join(f"  {f}\n" for f in sorted(copied)), encoding="utf-8")
    print(f"{len(copied)} types.json file(s) for {len(wanted)} resource type(s) from {commit[:12]} in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
