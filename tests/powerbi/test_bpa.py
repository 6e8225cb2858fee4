"""The semantic model passes Microsoft's Best Practice Analyzer rules of severity 2 and 3 (warning,
error): every rule that can be decided from the TMDL is evaluated (tests/powerbi/bpa.py), and
docs/powerbi.md lists which were and which were not.

BPARules.json is Microsoft's file (microsoft/Analysis-Services, BestPracticeRules/BPARules.json),
not copied into this repository: it is read from ``$METERING_SHARED_DIR/powerbi-bpa/BPARules.json``,
else from the ``shared`` folder beside the repository, and the tests skip when it is absent."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

import bpa
from tmdl import read_model

REPO = Path(__file__).parents[2]
DEFINITION = REPO / "powerbi" / "AzureOpenAIChargeback.SemanticModel" / "definition"
DOCS = REPO / "docs" / "powerbi.md"


def rules_file() -> Path:
    shared = Path(os.environ["METERING_SHARED_DIR"]) if os.environ.get("METERING_SHARED_DIR") else REPO.parent / "shared"
    return shared / "powerbi-bpa" / "BPARules.json"


def load_rules() -> list[dict]:
    path = rules_file()
    if not path.is_file():
        pytest.skip(f"{path} is absent: put Microsoft's BestPracticeRules/BPARules.json "
                    "(github.com/microsoft/Analysis-Services) there, or set METERING_SHARED_DIR")
    return json.loads(path.read_text(encoding="utf-8-sig"))


@pytest.fixture(scope="module")
def rules() -> list[dict]:
    return [r for r in load_rules() if r.get("Severity", 1) >= 2]


@pytest.fixture(scope="module")
def model():
    return read_model(DEFINITION)


def test_the_translations_cover_every_object_in_the_model():
    texts = {p.name: p.read_text(encoding="utf-8") for p in DEFINITION.rglob("*.tmdl")}
    assert not bpa.preconditions(texts), "extend tests/powerbi/bpa.py to these objects"


def test_every_rule_of_severity_2_and_3_is_evaluated_or_named_as_not_evaluable(rules):
    unknown = [r["ID"] for r in rules if bpa.evaluator(r) is None and r["ID"] not in bpa.NOT_EVALUABLE]
    assert not unknown, f"translate these rules into tests/powerbi/bpa.py (or say why they cannot be): {unknown}"
    ids = {r["ID"] for r in load_rules()}
    assert set(bpa.RULES) <= ids and set(bpa.NOT_EVALUABLE) <= ids, "a translated rule is no longer in BPARules.json"


def test_the_model_violates_no_rule_of_severity_2_or_3(rules, model):
    violations = {}
    for rule in rules:
        check = bpa.evaluator(rule)
        if check is not None and (found := check(model)):
            violations[f"{rule['ID']} (severity {rule['Severity']})"] = found
    assert not violations, json.dumps(violations, indent=1)


def test_the_rules_catch_the_mistakes_they_name(rules, model):
    """The checks are real: a money column typed double, a sum-summarised visible count, a month text
    without a sort column and a visible foreign key are each found."""
    by_id = {r["ID"]: bpa.evaluator(r) for r in rules}
    broken = copy.deepcopy(model)
    facts = broken.tables["v_chargeback_monthly"]
    facts.columns["ptu_cost"]["dataType"] = "double"
    facts.columns["requests"].update(summarizeBy="sum", isHidden=False)
    facts.columns["month"].pop("sortByColumn", None)
    facts.columns["month"]["isHidden"] = False
    assert "v_chargeback_monthly[ptu_cost]" in by_id["AVOID_FLOATING_POINT_DATA_TYPES"](broken)
    assert "v_chargeback_monthly[requests]" in by_id["NUMERIC_COLUMN_SUMMARIZE_BY"](broken)
    assert "v_chargeback_monthly[month]" in by_id["MONTH_(AS_A_STRING)_MUST_BE_SORTED"](broken)
    assert "v_chargeback_monthly[month]" in by_id["HIDE_FOREIGN_KEYS"](broken)
    assert "v_chargeback_monthly[requests]" in by_id["HIDE_FACT_TABLE_COLUMNS"](broken)
    assert by_id["USE_THE_DIVIDE_FUNCTION_FOR_DIVISION"] is not None
    facts.measures["PTU cost"] = "SUM ( v_chargeback_monthly[ptu_cost] ) / [Chargeback tokens]"
    assert "v_chargeback_monthly[PTU cost]" in by_id["USE_THE_DIVIDE_FUNCTION_FOR_DIVISION"](broken)


def test_the_docs_list_the_rules_evaluated_and_not(rules):
    text = DOCS.read_text(encoding="utf-8")
    for rule in rules:
        assert f"`{rule['ID']}`" in text, f"docs/powerbi.md does not list {rule['ID']}"
    for rule_id in bpa.NOT_EVALUABLE:
        assert f"`{rule_id}`" in text.split("could not be evaluated", 1)[-1], rule_id
