"""The Power BI project in powerbi/ is well-formed as Power BI Desktop reads it: every JSON file
(.pbip, .platform, definition.pbir/.pbism, report, pages, visuals) validates against the Microsoft
schema its ``$schema`` names (copies in tests/powerbi/schemas/, validated offline), the files
point at each other, the report has its five pages, and every visual has alternative text."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

ROOT = Path(__file__).parents[2] / "powerbi"
NAME = "AzureOpenAIChargeback"
REPORT = ROOT / f"{NAME}.Report"
MODEL = ROOT / f"{NAME}.SemanticModel"
SCHEMAS = Path(__file__).parent / "schemas"
PREFIX = "https://developer.microsoft.com/json-schemas/"


def _retrieve(uri: str) -> Resource:
    """Schemas by URL, from the local copies only (no network): a URL without a copy fails."""
    if not uri.startswith(PREFIX):
        raise LookupError(f"not a Microsoft json-schemas URL: {uri}")
    path = SCHEMAS / uri.removeprefix(PREFIX)
    if not path.is_file():
        raise LookupError(f"no local copy of {uri} (expected {path.relative_to(SCHEMAS.parents[2])})")
    return Resource.from_contents(json.loads(path.read_text(encoding="utf-8")), default_specification=DRAFT7)


REGISTRY = Registry(retrieve=_retrieve)


def json_files() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*") if p.is_file()
                  and (p.suffix in (".json", ".pbip", ".pbir", ".pbism") or p.name == ".platform"))


def load(path: Path) -> dict:
    raw = path.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf"), f"{path}: UTF-8 without BOM"
    return json.loads(raw.decode("utf-8"))


def test_the_project_has_every_kind_of_file():
    names = {p.relative_to(ROOT).as_posix() for p in json_files()}
    for expected in (f"{NAME}.pbip", f"{NAME}.Report/.platform", f"{NAME}.Report/definition.pbir",
                     f"{NAME}.SemanticModel/.platform", f"{NAME}.SemanticModel/definition.pbism",
                     f"{NAME}.Report/definition/report.json", f"{NAME}.Report/definition/version.json",
                     f"{NAME}.Report/definition/pages/pages.json"):
        assert expected in names
    for tmdl in ("database.tmdl", "model.tmdl", "relationships.tmdl", "expressions.tmdl"):
        assert (MODEL / "definition" / tmdl).is_file()
    assert len([n for n in names if n.endswith("/visual.json")]) >= 12


@pytest.mark.parametrize("path", json_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_json_file_validates_against_its_microsoft_schema(path):
    document = load(path)
    url = document.get("$schema")
    assert url and url.startswith(PREFIX), f"{path}: no Microsoft $schema"
    schema = REGISTRY.get_or_retrieve(url).value.contents
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)(schema, registry=REGISTRY)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]
    assert not errors, "\n".join(errors[:10])


def test_the_schema_check_catches_a_wrong_file():
    """The validation is real: a visual with an unknown property or a page without a name fails."""
    visual = load(next(REPORT.rglob("visual.json")))
    visual["visual"]["colour"] = "red"
    schema = REGISTRY.get_or_retrieve(visual["$schema"]).value.contents
    assert list(jsonschema.Draft7Validator(schema, registry=REGISTRY).iter_errors(visual))
    page = load(next(REPORT.rglob("page.json")))
    del page["name"]
    schema = REGISTRY.get_or_retrieve(page["$schema"]).value.contents
    assert list(jsonschema.Draft7Validator(schema, registry=REGISTRY).iter_errors(page))


def test_the_files_point_at_each_other():
    pbip = load(ROOT / f"{NAME}.pbip")
    assert [a["report"]["path"] for a in pbip["artifacts"]] == [f"{NAME}.Report"]
    pbir = load(REPORT / "definition.pbir")
    assert (REPORT / pbir["datasetReference"]["byPath"]["path"]).resolve() == MODEL.resolve()
    assert load(REPORT / ".platform")["metadata"]["type"] == "Report"
    assert load(MODEL / ".platform")["metadata"]["type"] == "SemanticModel"
    ids = {load(REPORT / ".platform")["config"]["logicalId"], load(MODEL / ".platform")["config"]["logicalId"]}
    assert len(ids) == 2


def test_pages_and_visuals_are_named_as_their_folders():
    pages_dir = REPORT / "definition" / "pages"
    meta = load(pages_dir / "pages.json")
    folders = sorted(p.name for p in pages_dir.iterdir() if p.is_dir())
    assert sorted(meta["pageOrder"]) == folders and meta["activePageName"] in folders
    displays = []
    for folder in meta["pageOrder"]:
        page = load(pages_dir / folder / "page.json")
        assert page["name"] == folder
        displays.append(page["displayName"])
        visuals = [load(v) for v in sorted((pages_dir / folder / "visuals").glob("*/visual.json"))]
        assert visuals, folder
        for path, visual in zip(sorted((pages_dir / folder / "visuals").glob("*/visual.json")), visuals):
            assert visual["name"] == path.parent.name
    assert displays == ["Chargeback by business unit and month", "Bill vs chargeback", "Trend", "Models", "Data quality"]


def test_every_visual_has_alternative_text():
    """A screen reader reads a visual's alt text (Format → General → Alt text); none may be empty."""
    visuals = sorted(REPORT.glob("definition/pages/*/visuals/*/visual.json"))
    assert visuals
    for path in visuals:
        general = load(path)["visual"].get("visualContainerObjects", {}).get("general", [{}])
        text = general[0].get("properties", {}).get("altText", {}).get("expr", {}).get("Literal", {}).get("Value", "")
        assert len(text.strip("'")) >= 20, f"{path.relative_to(ROOT)}: no alt text"
