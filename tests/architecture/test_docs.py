"""The README is a short tour and the manuals are one link away (issue 24): the README stays short,
its quick start is the two commands CI runs, it links every page of docs/, every relative link of
the README and the manuals reaches an existing file and heading, and every setting they name is
one the code reads."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MANUALS = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
ANCHOR = re.compile(r'<a id="([^"]+)"></a>')
SETTING = re.compile(r"\b(?:METERING|EVENTHUB)_[A-Z_]*[A-Z]\b|\b(?:METERING|EVENTHUB)_[A-Z_]+__[A-Za-z]+\b")


def prose(text: str) -> str:
    """The page without its fenced code blocks (a link or heading inside one is not one)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation out, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = prose(page.read_text(encoding="utf-8"))
    found: set[str] = set(ANCHOR.findall(text))
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE):
        base = slug(heading)
        found.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return found


def test_the_readme_is_a_short_tour():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    sections = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    assert sections == ["Quick start", "The command line", "Where to go next"]


def test_the_quick_start_is_two_commands_that_ci_runs():
    text = README.read_text(encoding="utf-8")
    quick_start = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", quick_start, flags=re.DOTALL).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]
    assert commands == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make demo" in ci and "make test" in ci


def test_every_manual_is_one_link_away_from_the_readme():
    linked = {target.split("#")[0] for target in LINK.findall(prose(README.read_text(encoding="utf-8")))}
    missing = {f"docs/{page.name}" for page in MANUALS} - linked
    assert missing == set()
    assert len(MANUALS) >= 14


def test_every_relative_link_reaches_a_file_and_a_heading():
    broken = []
    for page in (README, *MANUALS):
        for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{page.name}: {target}")
    assert broken == []


def test_every_setting_the_pages_name_is_read_by_the_code():
    """A setting a page names but no code reads is a stale page (or a typo a reader would copy)."""
    code = "\n".join(
        path.read_text(encoding="utf-8")
        for folder in ("metering", "db", "tests")
        for path in (ROOT / folder).rglob("*.py")
    ) + (ROOT / "function_app.py").read_text(encoding="utf-8") + (ROOT / ".ci" / "run").read_text(encoding="utf-8") + "\n".join(
        # the deployment's own settings (azd environment values) are read by the Bicep and its hooks
        path.read_text(encoding="utf-8") for path in [ROOT / "azure.yaml", *(ROOT / "infra").rglob("*")]
        if path.is_file() and path.suffix in (".bicep", ".sh", ".py", ".json", ".yaml", ".ps1", ""))
    named = {m for page in (README, *MANUALS) for m in SETTING.findall(page.read_text(encoding="utf-8"))}
    # EVENTHUB_CONNECTION__credential and the like belong to a connection the code names
    unread = {name for name in named if name.split("__")[0] not in code}
    assert len(named) >= 20 and unread == set()
