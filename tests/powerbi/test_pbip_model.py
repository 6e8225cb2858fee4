"""The Power BI semantic model (TMDL) agrees with the database and with its report: every table
imported from SQL names columns that the view or table has after `metering db upgrade` (and the
views' columns are all imported), every DAX reference and every visual's field exists in the
model, relationships go many-to-one onto a unique key (the Month table, not Date[Month]), and
every table reads either Azure SQL (Server, Database) or the folder of Parquet files `metering
export powerbi` writes, as the Source parameter says."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from tmdl import read_model

ROOT = Path(__file__).parents[2] / "powerbi"
MODEL = read_model(ROOT / "AzureOpenAIChargeback.SemanticModel" / "definition")
REPORT = ROOT / "AzureOpenAIChargeback.Report" / "definition"
VIEWS = ("v_usage_daily", "v_chargeback_monthly", "v_true_up_monthly", "v_bill_daily")
DIMENSIONS = ("subscriptions", "rates")
TABLE_REFERENCE = re.compile(r"('(?:[^']|'')+'|\b[A-Za-z_][A-Za-z0-9_]*)\[([^\]]+)\]")


CALENDARS = ("Date", "Month")


def source_object(table) -> str:
    """The view or table an M partition imports: ``…{[Schema = "dbo", Item = "NAME"]}[Data]``."""
    match = re.search(r'Item\s*=\s*"([^"]+)"', table.partition_source)
    assert match, f"{table.name}: no navigation to a SQL object in its partition"
    return match.group(1)


def imported():
    """The tables read from the database (or its Parquet export); the calendars are generated."""
    return [t for t in MODEL.tables.values() if t.partition_kind == "m" and t.name not in CALENDARS]


def data_columns(table) -> dict[str, dict]:
    """The columns loaded from the source (a calculated column, such as month_key, has none)."""
    return {name: props for name, props in table.columns.items() if "expression" not in props}


def test_the_model_has_the_facts_dimensions_and_calendar_tables():
    assert set(MODEL.tables) == {*VIEWS, *DIMENSIONS, *CALENDARS}
    assert sorted(MODEL.referenced_tables) == sorted(MODEL.tables)
    assert {source_object(t) for t in imported()} == {*VIEWS, *DIMENSIONS}
    assert all(source_object(t) == t.name for t in imported())
    assert all(MODEL.tables[name].partition_kind == "m" for name in CALENDARS)  # Power Query, not calculated tables


def test_every_table_reads_sql_or_parquet_as_the_source_parameter_says():
    """One parameter switches every table: Source = "Sql" reads the view through Sql.Database(Server,
    Database), Source = "Parquet" the file of the same name in ParquetFolder (`metering export powerbi`)."""
    source = MODEL.expressions["Source"]
    assert "IsParameterQuery=true" in source and 'List={"Parquet", "Sql"}' in source and 'Type="Text"' in source
    for name in ("ParquetFolder", "Server", "Database"):
        assert "IsParameterQuery=true" in MODEL.expressions[name] and 'Type="Text"' in MODEL.expressions[name]
    for table in imported():
        m = table.partition_source
        assert f'if Source = "Parquet" then' in m, table.name
        assert f'Parquet.Document(Folder.Files(ParquetFolder){{[Name = "{table.name}.parquet"]}}[Content])' in m
        assert f'Sql.Database(Server, Database){{[Schema = "dbo", Item = "{table.name}"]}}[Data]' in m
        assert m.count("Sql.Database(") == 1 and m.count("Parquet.Document(") == 1, table.name


def test_every_imported_column_exists_in_the_database_and_views_are_imported_whole(engine):
    """After `metering db upgrade` (SQLite, and PostgreSQL when it runs), each imported table's
    source columns are columns of its view or table; a view's columns are all in the model, so a
    dimension added to a view must be added to the model too."""
    inspector = sa.inspect(engine)
    for table in imported():
        name = source_object(table)
        in_database = {c["name"] for c in inspector.get_columns(name)}
        in_model = {str(props["sourceColumn"]) for props in data_columns(table).values()}
        assert in_model <= in_database, (name, sorted(in_model - in_database))
        assert in_database <= in_model, (name, sorted(in_database - in_model))
        for typed in re.findall(r'\{"([^"]+)", (?:type [a-z]+|[A-Za-z0-9]+\.Type)\}', table.partition_source):
            assert typed in in_model, (name, typed)  # the M typing step names loaded columns


def _dax(table) -> list[str]:
    return list(table.measures.values()) + ([table.partition_source] if table.partition_kind == "calculated" else [])


def test_every_dax_reference_exists():
    measures = {m for t in MODEL.tables.values() for m in t.measures}
    assert len(measures) == sum(len(t.measures) for t in MODEL.tables.values()), "measure names must be unique"
    for table in MODEL.tables.values():
        calculated = [str(p["expression"]) for p in table.columns.values() if "expression" in p]
        for expression in _dax(table) + calculated:
            for quoted, column in TABLE_REFERENCE.findall(expression):
                referenced = quoted[1:-1].replace("''", "'") if quoted.startswith("'") else quoted
                assert referenced in MODEL.tables, (table.name, referenced)
                assert column in MODEL.tables[referenced].columns, (table.name, f"{referenced}[{column}]")
        for expression in table.measures.values():
            for name in re.findall(r"(?<![\w'\]])\[([^\]]+)\]", expression):
                assert name in measures, (table.name, name)


def test_the_measures_finance_asks_for():
    daily = MODEL.tables["v_usage_daily"].measures
    for name in ("Cost", "Tokens", "Estimated share", "Unpriced share", "Unpriced requests"):
        assert name in daily
    monthly = MODEL.tables["v_chargeback_monthly"].measures
    for name in ("Chargeback cost", "PTU cost", "Total charge", "Chargeback unpriced requests"):
        assert name in monthly
    # Total charge: pay-as-you-go cost plus the PTU cost the view carries (migration 0006).
    assert monthly["Total charge"] == "[Chargeback cost] + [PTU cost]"
    assert monthly["PTU cost"] == "SUM ( v_chargeback_monthly[ptu_cost] )"
    # Unknown is not zero: the cost is blank where nothing in the context is priced.
    assert "BLANK ()" in daily["Cost"] and "BLANK ()" in monthly["Chargeback cost"]


def test_relationships_are_many_to_one_onto_unique_keys():
    for (many_table, many_column), (one_table, one_column) in MODEL.relationships:
        assert many_column in MODEL.tables[many_table].columns, (many_table, many_column)
        one = MODEL.tables[one_table].columns[one_column]
        assert one.get("isKey") is True, f"{one_table}[{one_column}] is the one side but not a key"
        assert MODEL.tables[many_table].columns[many_column]["dataType"] == one["dataType"]
    pairs = {(m[0], o[0]) for m, o in MODEL.relationships}
    assert {("v_usage_daily", "Date"), ("v_usage_daily", "Month"), ("v_chargeback_monthly", "Month"),
            ("v_true_up_monthly", "Month"), ("v_bill_daily", "Date"), ("v_bill_daily", "Month")} == pairs
    # The facts carry business unit and cost center, (unmapped) included: a relationship onto the
    # subscriptions mapping would lose those rows (a referential-integrity violation).
    assert not {o[0] for _, o in MODEL.relationships} & {*DIMENSIONS}
    # The documented mistake: Date[Month] repeats once per day, it cannot be the one side.
    assert ("Date", "Month") not in {o for _, o in MODEL.relationships}
    # A star, not a snowflake: no table is on both sides (Month filters each fact itself).
    assert not {m[0] for m, _ in MODEL.relationships} & {o[0] for _, o in MODEL.relationships}


def test_date_and_month_tables_are_generated_from_the_data():
    """Power Query builds both from the first to the last month of every fact's days and months (so
    every fact row finds its day and month), with the month as YYYY-MM text sorted by its first day."""
    date, month = MODEL.tables["Date"], MODEL.tables["Month"]
    assert date.properties.get("dataCategory") == "Time" and date.columns["Date"].get("isKey") is True
    for table in (date, month):
        for fact in ("v_usage_daily[usage_date]", "v_bill_daily[day]", "v_chargeback_monthly[month]",
                     "v_true_up_monthly[month]"):
            assert fact in table.partition_source, (table.name, fact)
        assert "List.Min(FactDays, Today)" in table.partition_source
        assert "List.Max(FactDays, Today)" in table.partition_source
        assert 'Month = Date.ToText(_, "yyyy-MM")' in table.partition_source
        assert table.columns["Month"]["sortByColumn"] == "'Month start'"
        assert set(table.columns) == {n for n in re.findall(r'(?:#"([^"]+)"|(\w+)) = ', table.partition_source.split(
            "type table [")[1]) for n in n if n}
    assert month.columns["Month"].get("isKey") is True
    assert "each Date.Day(_) = 1" in month.partition_source


def test_month_keys_in_the_views_match_the_month_table_format(engine):
    """Month[Month] is FORMAT(date, "yyyy-MM"): the views' month text must be that, and the daily
    view's usage_month must be its usage_date's month, or the relationships match nothing."""
    from report_data import seed

    seed(engine)
    with engine.connect() as conn:
        months = set(conn.execute(sa.text("SELECT DISTINCT month FROM v_chargeback_monthly")).scalars())
        daily = conn.execute(sa.text("SELECT DISTINCT usage_date, usage_month FROM v_usage_daily")).all()
    assert months and all(re.fullmatch(r"\d{4}-\d{2}", m) for m in months)
    assert all(str(day)[:7] == month for day, month in daily)
    assert months == {month for _, month in daily}


# --------------------------------------------------------------------------- the report's fields


def _fields(node):
    """Every Column / Measure reference ({"Expression": {"SourceRef": {"Entity": …}}, "Property": …})."""
    if isinstance(node, dict):
        for kind in ("Column", "Measure"):
            ref = node.get(kind)
            if isinstance(ref, dict) and "Property" in ref:
                yield kind, ref["Expression"]["SourceRef"]["Entity"], ref["Property"]
        for value in node.values():
            yield from _fields(value)
    elif isinstance(node, list):
        for value in node:
            yield from _fields(value)


VISUALS = sorted(REPORT.glob("pages/*/visuals/*/visual.json"))


@pytest.mark.parametrize("path", VISUALS, ids=lambda p: f"{p.parents[2].name}/{p.parent.name}")
def test_every_visual_field_exists_in_the_model(path):
    visual = json.loads(path.read_text(encoding="utf-8"))
    for kind, entity, prop in _fields(visual):
        assert entity in MODEL.tables, (entity, prop)
        table = MODEL.tables[entity]
        if kind == "Column":
            assert prop in table.columns, f"{entity}[{prop}] is not a column"
        else:
            assert prop in table.measures, f"[{prop}] is not a measure of {entity}"
    for projections in visual["visual"].get("query", {}).get("queryState", {}).values():
        for item in projections["projections"]:
            (kind, entity, prop), = _fields(item["field"])
            assert item["queryRef"] == f"{entity}.{prop}"


def test_the_cross_reference_check_catches_a_missing_field(tmp_path):
    """The check is real: a visual naming a column the model does not have fails it."""
    visual = json.loads(VISUALS[0].read_text(encoding="utf-8"))
    visual["visual"]["query"] = {"queryState": {"Values": {"projections": [{
        "field": {"Column": {"Expression": {"SourceRef": {"Entity": "v_usage_daily"}}, "Property": "user_email"}},
        "queryRef": "v_usage_daily.user_email"}]}}}
    broken = tmp_path / "visual.json"
    broken.write_text(json.dumps(visual))
    with pytest.raises(AssertionError, match="user_email"):
        test_every_visual_field_exists_in_the_model(broken)


def test_every_page_shows_data_quality_or_says_what_cost_leaves_out():
    """An unpriced request is missing from the cost, not free: each page either shows a data-quality
    measure or says so in its text."""
    quality = {"Unpriced requests", "Unpriced share", "Estimated share", "Chargeback unpriced requests",
               "Chargeback estimated share", "Incomplete requests"}
    for page in sorted(REPORT.glob("pages/*/page.json")):
        visuals = [json.loads(p.read_text(encoding="utf-8")) for p in page.parent.glob("visuals/*/visual.json")]
        measures = {prop for v in visuals for kind, _, prop in _fields(v) if kind == "Measure"}
        text = json.dumps(visuals)
        assert measures & quality or "unpriced" in text.lower(), page.parent.name
