"""Microsoft's Best Practice Analyzer rules (BPARules.json of microsoft/Analysis-Services), evaluated
on the TMDL as tests/powerbi/tmdl.py reads it.

Tabular Editor evaluates each rule's Dynamic LINQ ``Expression`` on the Tabular Object Model. Here
each rule that can be decided from the model's text is translated by hand into Python over the parsed
TMDL (``RULES``: rule ID → function returning the names of the objects that violate it); the rules
that are only a disjunction of ``RegEx.IsMatch(Expression, "…")`` are evaluated from the rule's own
patterns. ``NOT_EVALUABLE`` lists the rules that need what TMDL does not hold (the VertiPaq statistics
of a refreshed model), with the reason. The translations assume what ``preconditions`` checks: no
roles, perspectives, hierarchies, calculation groups, legacy data sources or DirectQuery partitions
(a model that gains one must extend them)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from tmdl import Model, Table

NUMERIC = ("int64", "decimal", "double")
REGEX_CALL = re.compile(r'RegEx\.IsMatch\(\s*Expression\s*,\s*"((?:[^"]|"")*)"\s*\)')
STRING = re.compile(r'"(?:[^"]|"")*"')
QUALIFIED = re.compile(r"('(?:[^']|'')+'|\b[A-Za-z_][A-Za-z0-9_]*)\[([^\]]+)\]")
UNQUALIFIED = re.compile(r"(?<![\w'\]])\[([^\]]+)\]")

NOT_EVALUABLE = {  # on the TMDL: each reads an annotation VertiPaq Analyzer writes into a refreshed model
    "REDUCE_USAGE_OF_LONG-LENGTH_COLUMNS_WITH_HIGH_CARDINALITY": "LongLengthRowCount",
    "SPLIT_DATE_AND_TIME": "DateTimeWithHourMinSec",
    "LARGE_TABLES_SHOULD_BE_PARTITIONED": "Vertipaq_RowCount",
    "FIX_REFERENTIAL_INTEGRITY_VIOLATIONS": "Vertipaq_RIViolationInvalidRows",
}


# --------------------------------------------------------------------------- the model's objects

def columns(model: Model) -> Iterator[tuple[Table, str, dict]]:
    for table in model.tables.values():
        for name, props in table.columns.items():
            yield table, name, props


def is_calculated(props: dict) -> bool:
    return "expression" in props


def data_columns(model: Model) -> Iterator[tuple[Table, str, dict]]:
    return ((t, n, p) for t, n, p in columns(model) if t.partition_kind == "m" and not is_calculated(p))


def data_type(props: dict) -> str:
    return str(props.get("dataType", "")).lower()


def hidden(props: dict) -> bool:
    return props.get("isHidden") is True


def table_hidden(table: Table) -> bool:
    return table.properties.get("isHidden") is True


def mdx(props: dict) -> bool:
    return str(props.get("isAvailableInMDX", "true")).lower() != "false"


def measures(model: Model) -> Iterator[tuple[Table, str, str, dict]]:
    for table in model.tables.values():
        for name, expression in table.measures.items():
            yield table, name, expression, table.measure_properties.get(name, {})


def relationships(model: Model) -> Iterator[tuple[tuple[str, str], tuple[str, str], dict]]:
    for (many, one), props in zip(model.relationships, model.relationship_properties or [{}] * len(model.relationships)):
        yield many, one, props


def from_many(props: dict) -> bool:
    return str(props.get("fromCardinality", "many")).lower() == "many"


def to_many(props: dict) -> bool:
    return str(props.get("toCardinality", "one")).lower() == "many"


def both_directions(props: dict) -> bool:
    return str(props.get("crossFilteringBehavior", "oneDirection")).lower() == "bothdirections"


def active(props: dict) -> bool:
    return str(props.get("isActive", "true")).lower() != "false"


def used_in_relationships(model: Model, table: str, column: str) -> bool:
    return any((table, column) in (many, one) for many, one, _ in relationships(model))


def used_in_sort_by(table: Table, column: str) -> bool:
    return any(props.get("sortByColumn") is not None and _name(props["sortByColumn"]) == column
               for props in table.columns.values())


def _name(text) -> str:
    text = str(text).strip()
    return text[1:-1].replace("''", "'") if text.startswith("'") else text


def dax_expressions(model: Model) -> Iterator[tuple[str, Table, str]]:
    """(kind, home table, DAX) of every DAX expression: measures (and their dynamic format strings),
    calculated columns and calculated tables."""
    for table in model.tables.values():
        for name, expression in table.measures.items():
            yield "measure", table, expression
            definition = table.measure_properties.get(name, {}).get("formatStringDefinition")
            if definition:
                yield "measure", table, str(definition)
        for props in table.columns.values():
            if is_calculated(props):
                yield "column", table, str(props["expression"])
        if table.partition_kind == "calculated":
            yield "table", table, table.partition_source


def column_references(model: Model, home: Table, expression: str) -> set[tuple[str, str, bool]]:
    """(table, column, fully qualified) of each column an expression names."""
    code = STRING.sub('""', expression)
    found = set()
    for quoted, column in QUALIFIED.findall(code):
        table = _name(quoted)
        if table in model.tables and column in model.tables[table].columns:
            found.add((table, column, True))
    all_measures = {m for t in model.tables.values() for m in t.measures}
    for name in UNQUALIFIED.findall(code):
        if name in home.columns and name not in all_measures:
            found.add((home.name, name, False))
    return found


def referenced_columns(model: Model) -> set[tuple[str, str]]:
    return {(t, c) for _, home, expression in dax_expressions(model)
            for t, c, _ in column_references(model, home, expression)}


def dotnet_regex(pattern: str) -> re.Pattern[str]:
    """A .NET pattern of the rules in Python: ``(?i)`` may stand mid-pattern in .NET (it then applies
    from there on); the rules' patterns only put it before letters, so the whole pattern ignores case."""
    flags = re.IGNORECASE if "(?i)" in pattern else 0
    return re.compile(pattern.replace('""', '"').replace("(?i)", ""), flags)


def regex_only(expression: str) -> list[re.Pattern[str]] | None:
    """The patterns of a rule that is only ``RegEx.IsMatch(Expression, "…") or …``; else None."""
    patterns = [dotnet_regex(p) for p in REGEX_CALL.findall(expression)]
    rest = re.sub(r"\bor\b", "", REGEX_CALL.sub("", expression)).strip()
    return patterns if patterns and not rest else None


def regex_rule(rule: dict) -> Callable[[Model], list[str]]:
    patterns = regex_only(rule["Expression"])
    assert patterns is not None
    scope = {s.strip() for s in rule["Scope"].split(",")}

    def check(model: Model) -> list[str]:
        found = []
        if "Measure" in scope:
            found += [f"{t.name}[{n}]" for t, n, e, _ in measures(model) if any(p.search(e) for p in patterns)]
        if "CalculatedColumn" in scope:
            found += [f"{t.name}[{n}]" for t, n, p in columns(model)
                      if is_calculated(p) and any(x.search(str(p["expression"])) for x in patterns)]
        return found

    return check


# --------------------------------------------------------------------------- the translated rules

def _avoid_floating_point(model: Model) -> list[str]:
    return [f"{t.name}[{n}]" for t, n, p in columns(model) if data_type(p) == "double"]


def _mdx_false_nonattribute(model: Model) -> list[str]:
    return [f"{t.name}[{n}]" for t, n, p in columns(model)
            if mdx(p) and (hidden(p) or table_hidden(t)) and not used_in_sort_by(t, n) and p.get("sortByColumn") is None]


def _bidirectional_high_cardinality(model: Model) -> list[str]:
    """Needs the column's cardinality (VertiPaq); without a both-directions relationship it cannot
    hold, so any such relationship is reported."""
    return [f"{many[0]}[{many[1]}]" for many, _, props in relationships(model) if both_directions(props)]


def _snowflake(model: Model) -> list[str]:
    return [name for name in model.tables
            if any(many[0] == name for many, _, _ in relationships(model))
            and any(one[0] == name for _, one, _ in relationships(model))]


def _date_keyed_time_table(table: Table) -> bool:
    return table.properties.get("dataCategory") == "Time" and any(
        p.get("isKey") is True and data_type(p) == "datetime" for p in table.columns.values())


def _model_date_table(model: Model) -> list[str]:
    return [] if any(_date_keyed_time_table(t) for t in model.tables.values()) else ["Model"]


def _date_tables_marked(model: Model) -> list[str]:
    return [n for n, t in model.tables.items()
            if ("DATE" in n.upper() or "CALENDAR" in n.upper()) and not _date_keyed_time_table(t)]


def _auto_date_tables(model: Model) -> list[str]:
    return [n for n, t in model.tables.items() if t.partition_kind == "calculated"
            and (n.startswith("DateTableTemplate_") or n.startswith("LocalDateTable_"))]


def _excessive_bidirectional(model: Model) -> list[str]:
    all_ = list(relationships(model))
    bad = sum(both_directions(p) for _, _, p in all_) + sum(from_many(p) and to_many(p) for _, _, p in all_)
    return ["Model"] if bad / max(len(all_), 1) > 0.3 else []


def _no_roles(model: Model) -> list[str]:
    return []  # preconditions: the model has no roles, so no row-level security


MINIMIZE_M = ("Table.Combine(", "Table.Join(", "Table.NestedJoin(", "Table.AddColumn(", "Table.Group(", "Table.Sort(",
              "Table.Pivot(", "Table.Unpivot(", "Table.UnpivotOtherColumns(", "Table.Distinct(", '[Query="SELECT',
              "Value.NativeQuery", "OleDb.Query", "Odbc.Query")


def _minimize_power_query(model: Model) -> list[str]:
    return [t.name for t in model.tables.values()
            if t.partition_kind == "m" and any(s in t.partition_source for s in MINIMIZE_M)]


def _pivoted_months(model: Model) -> list[str]:
    def has(table: Table, month: str) -> bool:
        return any(month in n.upper() and data_type(p) in NUMERIC for n, p in table.columns.items())

    return [n for n, t in model.tables.items() if all(has(t, m) for m in ("JAN", "FEB", "MAR", "APR", "MAY", "JUN"))]


def _many_to_many_single_direction(model: Model) -> list[str]:
    return [f"{m[0]}->{o[0]}" for m, o, p in relationships(model) if from_many(p) and to_many(p) and both_directions(p)]


def _calculated_tables(model: Model) -> list[str]:
    return [n for n, t in model.tables.items() if t.partition_kind == "calculated"]


def _redundant_columns(model: Model) -> list[str]:
    found = []
    for table, name, _ in columns(model):
        if used_in_relationships(model, table.name, name):
            continue
        related = {one[0] for many, one, _ in relationships(model) if many[0] == table.name}  # FromTable = this table
        if any(name in model.tables[other].columns for other in related if other != table.name):
            found.append(f"{table.name}[{name}]")
    return found


TIME_INTELLIGENCE = re.compile(r"(CLOSINGBALANCE(MONTH|QUARTER|YEAR)|DATEADD|DATESBETWEEN|DATESINPERIOD|DATES[MQY]TD|"
                               r"ENDOF(MONTH|QUARTER|YEAR)|FIRSTDATE|FIRSTNONBLANK|FIRSTNONBLANKVALUE|LASTDATE|"
                               r"LASTNONBLANK|LASTNONBLANKVALUE|NEXT(DAY|MONTH|QUARTER|YEAR)|OPENINGBALANCE(MONTH|"
                               r"QUARTER|YEAR)|PARALLELPERIOD|PREVIOUS(DAY|MONTH|QUARTER|YEAR)|SAMEPERIODLASTYEAR|"
                               r"STARTOF(MONTH|QUARTER|YEAR)|TOTAL[MQY]TD)\s*\(")


def _time_intelligence_direct_query(model: Model) -> list[str]:
    direct = any(str(t.properties.get("mode", "")).lower() == "directquery" for t in model.tables.values())
    return [f"{t.name}[{n}]" for t, n, e, _ in measures(model) if direct and TIME_INTELLIGENCE.search(e)]


def _calculated_column_count(model: Model) -> list[str]:
    return ["Model"] if sum(is_calculated(p) for _, _, p in columns(model)) > 5 else []


def _columns_fully_qualified(model: Model) -> list[str]:
    return [f"{t.name}[{n}]" for t, n, e, _ in measures(model)
            if any(not qualified for _, _, qualified in column_references(model, t, e))]


def _measures_unqualified(model: Model) -> list[str]:
    all_measures = {m for t in model.tables.values() for m in t.measures}
    found = []
    for kind, home, expression in dax_expressions(model):
        code = STRING.sub('""', expression)
        if any(column in all_measures and _name(quoted) in model.tables for quoted, column in QUALIFIED.findall(code)):
            found.append(f"{home.name} ({kind})")
    return found


def _squeezed(text: str) -> str:
    return re.sub(r"[ \n\r\t]", "", text)


def _duplicate_measures(model: Model) -> list[str]:
    everything = [(t.name, n, _squeezed(e)) for t, n, e, _ in measures(model)]
    return [f"{t}[{n}]" for t, n, e in everything if sum(e == other for _, _, other in everything) > 1]


def _direct_measure_references(model: Model) -> list[str]:
    names = {f"[{m}]" for t in model.tables.values() for m in t.measures}
    return [f"{t.name}[{n}]" for t, n, e, _ in measures(model) if e in names]


def _inactive_relationships(model: Model) -> list[str]:
    found = []
    for many, one, props in relationships(model):
        if active(props):
            continue
        pattern = re.compile(rf"USERELATIONSHIP\s*\(\s*'*{re.escape(many[0])}'*\[{re.escape(many[1])}\]\s*,\s*"
                             rf"'*{re.escape(one[0])}'*\[{re.escape(one[1])}\]", re.IGNORECASE)
        if not any(pattern.search(e) for _, _, e, _ in measures(model)):
            found.append(f"{many[0]}->{one[0]}")
    return found


def _source_column(model: Model) -> list[str]:
    return [f"{t.name}[{n}]" for t, n, p in data_columns(model) if not str(p.get("sourceColumn", "")).strip()]


def _expressions_present(model: Model) -> list[str]:
    return ([f"{t.name}[{n}]" for t, n, e, _ in measures(model) if not e.strip()]
            + [f"{t.name}[{n}]" for t, n, p in columns(model) if is_calculated(p) and not str(p["expression"]).strip()])


def _no_provider_partitions(model: Model) -> list[str]:
    return [t.name for t in model.tables.values() if t.partition_kind not in ("m", "calculated")]


def _relationship_types(model: Model) -> list[str]:
    return [f"{m[0]}->{o[0]}" for m, o, _ in relationships(model)
            if data_type(model.tables[m[0]].columns[m[1]]) != data_type(model.tables[o[0]].columns[o[1]])]


def _names(model: Model) -> Iterator[tuple[str, str]]:
    """(kind, name) of the tables, measures, partitions and columns the name rules look at."""
    for table in model.tables.values():
        yield "table", table.name
        yield "partition", table.partition_name or table.name
        for name in table.measures:
            yield "measure", name
        for name in table.columns:
            yield "column", name


def _invalid_name_characters(model: Model) -> list[str]:
    return [n for _, n in _names(model) if any(ord(c) < 32 and not c.isspace() or 127 <= ord(c) < 160 and not c.isspace()
                                               for c in n)]


def _descriptions(model: Model) -> Iterator[str]:
    for table in model.tables.values():
        yield str(table.properties.get("description", ""))
        for props in [*table.columns.values(), *table.measure_properties.values()]:
            yield str(props.get("description", ""))


def _invalid_description_characters(model: Model) -> list[str]:
    return [d for d in _descriptions(model) if any((ord(c) < 32 or 127 <= ord(c) < 160) and not c.isspace() for c in d)]


def _mdx_needed(model: Model) -> list[str]:
    return [f"{t.name}[{n}]" for t, n, p in columns(model)
            if not mdx(p) and (used_in_sort_by(t, n) or p.get("sortByColumn") is not None)]


def _unnecessary_columns(model: Model) -> list[str]:
    referenced = referenced_columns(model)
    return [f"{t.name}[{n}]" for t, n, p in columns(model)
            if (hidden(p) or table_hidden(t)) and (t.name, n) not in referenced
            and not used_in_relationships(model, t.name, n) and not used_in_sort_by(t, n)]


def _unnecessary_measures(model: Model) -> list[str]:
    found = []
    for table, name, _, props in measures(model):
        if table_hidden(table) or hidden(props):
            others = [e for t, n, e, _ in measures(model) if (t.name, n) != (table.name, name)]
            if not any(re.search(rf"\[{re.escape(name)}\]", STRING.sub('""', e)) for e in others):
                found.append(f"{table.name}[{name}]")
    return found


def _special_characters(model: Model) -> list[str]:
    return [n for _, n in _names(model) if any(c in n for c in "\t\n\r")]


def _leading_trailing_space(model: Model) -> list[str]:
    return [n for _, n in _names(model) if n != n.strip(" ")]


def _measure_format(model: Model) -> list[str]:
    return [f"{t.name}[{n}]" for t, n, _, p in measures(model)
            if not hidden(p) and not table_hidden(t) and not str(p.get("formatString", "")).strip()
            and not str(p.get("formatStringDefinition", "")).strip()]


def _numeric_summarize_by(model: Model) -> list[str]:
    return [f"{t.name}[{n}]" for t, n, p in columns(model)
            if data_type(p) in NUMERIC and str(p.get("summarizeBy", "default")).lower() != "none"
            and not (hidden(p) or table_hidden(t))]


def _format(props: dict) -> str:
    text = str(props.get("formatString", ""))
    return text[1:-1].replace('""', '"') if text.startswith('"') and text.endswith('"') else text


def _percentage_format(model: Model) -> list[str]:
    return [f"{t.name}[{n}]" for t, n, _, p in measures(model)
            if "%" in _format(p) and _format(p) != "#,0.0%;-#,0.0%;#,0.0%"]


def _integer_format(model: Model) -> list[str]:
    return [f"{t.name}[{n}]" for t, n, _, p in measures(model)
            if "$" not in _format(p) and "%" not in _format(p) and _format(p) not in ("#,0", "#,0.0")]


def _hide_foreign_keys(model: Model) -> list[str]:
    return [f"{m[0]}[{m[1]}]" for m, _, p in relationships(model)
            if from_many(p) and not hidden(model.tables[m[0]].columns[m[1]])]


AGGREGATES = ("COUNT", "COUNTBLANK", "SUM", "AVERAGE", "VALUES", "DISTINCT", "DISTINCTCOUNT", "MIN", "MAX", "COUNTA",
              "AVERAGEA", "MAXA", "MINA")


def _hide_fact_columns(model: Model) -> list[str]:
    found = []
    for table, name, props in columns(model):
        if hidden(props) or data_type(props) not in NUMERIC:
            continue
        pattern = re.compile(rf"({'|'.join(AGGREGATES)})\s*\(\s*'*{re.escape(table.name)}'*\[{re.escape(name)}\]\s*\)",
                             re.IGNORECASE)
        if any(pattern.search(e) for _, _, e, _ in measures(model)):
            found.append(f"{table.name}[{name}]")
    return found


def _month_sorted(model: Model) -> list[str]:
    return [f"{t.name}[{n}]" for t, n, p in columns(model)
            if "MONTH" in n.upper() and "MONTHS" not in n.upper() and data_type(p) == "string"
            and p.get("sortByColumn") is None]


RULES: dict[str, Callable[[Model], list[str]]] = {
    "AVOID_FLOATING_POINT_DATA_TYPES": _avoid_floating_point,
    "ISAVAILABLEINMDX_FALSE_NONATTRIBUTE_COLUMNS": _mdx_false_nonattribute,
    "AVOID_BI-DIRECTIONAL_RELATIONSHIPS_AGAINST_HIGH-CARDINALITY_COLUMNS": _bidirectional_high_cardinality,
    "SNOWFLAKE_SCHEMA_ARCHITECTURE": _snowflake,
    "MODEL_SHOULD_HAVE_A_DATE_TABLE": _model_date_table,
    "DATE/CALENDAR_TABLES_SHOULD_BE_MARKED_AS_A_DATE_TABLE": _date_tables_marked,
    "REMOVE_AUTO-DATE_TABLE": _auto_date_tables,
    "AVOID_EXCESSIVE_BI-DIRECTIONAL_OR_MANY-TO-MANY_RELATIONSHIPS": _excessive_bidirectional,
    "LIMIT_ROW_LEVEL_SECURITY_(RLS)_LOGIC": _no_roles,
    "MINIMIZE_POWER_QUERY_TRANSFORMATIONS": _minimize_power_query,
    "AVOID_USING_MANY-TO-MANY_RELATIONSHIPS_ON_TABLES_USED_FOR_DYNAMIC_ROW_LEVEL_SECURITY": _no_roles,
    "UNPIVOT_PIVOTED_(MONTH)_DATA": _pivoted_months,
    "MANY-TO-MANY_RELATIONSHIPS_SHOULD_BE_SINGLE-DIRECTION": _many_to_many_single_direction,
    "REDUCE_USAGE_OF_CALCULATED_TABLES": _calculated_tables,
    "REMOVE_REDUNDANT_COLUMNS_IN_RELATED_TABLES": _redundant_columns,
    "MEASURES_USING_TIME_INTELLIGENCE_AND_MODEL_IS_USING_DIRECT_QUERY": _time_intelligence_direct_query,
    "REDUCE_NUMBER_OF_CALCULATED_COLUMNS": _calculated_column_count,
    "DAX_COLUMNS_FULLY_QUALIFIED": _columns_fully_qualified,
    "DAX_MEASURES_UNQUALIFIED": _measures_unqualified,
    "AVOID_DUPLICATE_MEASURES": _duplicate_measures,
    "MEASURES_SHOULD_NOT_BE_DIRECT_REFERENCES_OF_OTHER_MEASURES": _direct_measure_references,
    "INACTIVE_RELATIONSHIPS_THAT_ARE_NEVER_ACTIVATED": _inactive_relationships,
    "DATA_COLUMNS_MUST_HAVE_A_SOURCE_COLUMN": _source_column,
    "EXPRESSION_RELIANT_OBJECTS_MUST_HAVE_AN_EXPRESSION": _expressions_present,
    "AVOID_STRUCTURED_DATA_SOURCES_WITH_PROVIDER_PARTITIONS": _no_provider_partitions,
    "AVOID_THE_USERELATIONSHIP_FUNCTION_AND_RLS_AGAINST_THE_SAME_TABLE": _no_roles,
    "RELATIONSHIP_COLUMNS_SAME_DATA_TYPE": _relationship_types,
    "AVOID_INVALID_NAME_CHARACTERS": _invalid_name_characters,
    "AVOID_INVALID_DESCRIPTION_CHARACTERS": _invalid_description_characters,
    "SET_ISAVAILABLEINMDX_TO_TRUE_ON_NECESSARY_COLUMNS": _mdx_needed,
    "UNNECESSARY_COLUMNS": _unnecessary_columns,
    "UNNECESSARY_MEASURES": _unnecessary_measures,
    "CALCULATION_GROUPS_WITH_NO_CALCULATION_ITEMS": _no_roles,  # preconditions: no calculation groups
    "SPECIAL_CHARS_IN_OBJECT_NAMES": _special_characters,
    "OBJECTS_SHOULD_NOT_START_OR_END_WITH_A_SPACE": _leading_trailing_space,
    "PROVIDE_FORMAT_STRING_FOR_MEASURES": _measure_format,
    "NUMERIC_COLUMN_SUMMARIZE_BY": _numeric_summarize_by,
    "PERCENTAGE_FORMATTING": _percentage_format,
    "INTEGER_FORMATTING": _integer_format,
    "HIDE_FOREIGN_KEYS": _hide_foreign_keys,
    "HIDE_FACT_TABLE_COLUMNS": _hide_fact_columns,
    "MONTH_(AS_A_STRING)_MUST_BE_SORTED": _month_sorted,
}

UNSUPPORTED_OBJECTS = re.compile(r"^\s*(role|perspective|hierarchy|variation|calculationGroup|dataSource|"
                                 r"calculationItem|tablePermission)\b|^\s*mode:\s*directQuery", re.M)


def preconditions(texts: dict[str, str]) -> list[str]:
    """TMDL files (name → text) holding objects the translations do not model."""
    return [f"{name}: {m.group(0).strip()}" for name, text in texts.items() for m in UNSUPPORTED_OBJECTS.finditer(text)]


def evaluator(rule: dict) -> Callable[[Model], list[str]] | None:
    """The check of a rule: hand-translated, or from its own patterns; None when not evaluable here."""
    if rule["ID"] in RULES:
        return RULES[rule["ID"]]
    if rule["ID"] not in NOT_EVALUABLE and regex_only(rule["Expression"]) is not None:
        return regex_rule(rule)
    return None


# --------------------------------------------------------------------------- on the data

def calendar(rows: dict[str, list[dict]]) -> tuple[set, set]:
    """The days and months the Date and Month tables hold for these fact rows (their Power Query:
    every day of the first to the last month of the facts' days and months; today is left out, so
    the check is stricter than the model)."""
    from datetime import date, timedelta

    days = [r["usage_date"] for r in rows["v_usage_daily"]] + [r["day"] for r in rows["v_bill_daily"]]
    days += [date.fromisoformat(r["month"] + "-01") for t in ("v_chargeback_monthly", "v_true_up_monthly")
             for r in rows[t]]
    if not days:
        return set(), set()
    first = min(days).replace(day=1)
    last = max(days)
    last = (last.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
    every = {first + timedelta(days=n) for n in range((last - first).days + 1)}
    return every, {d.strftime("%Y-%m") for d in every}


def _ri_violations(model: Model, rows: dict[str, list[dict]]) -> list[str]:
    days, months = calendar(rows)
    keys = {"Date": days, "Month": months}
    found = []
    for many, one, _ in relationships(model):
        source = str(model.tables[many[0]].columns[many[1]]["sourceColumn"])
        valid = keys.get(one[0]) or {r[str(model.tables[one[0]].columns[one[1]]["sourceColumn"])] for r in rows[one[0]]}
        bad = sum(r[source] is None or r[source] not in valid for r in rows[many[0]])
        if bad:
            found.append(f"{many[0]}[{many[1]}] -> {one[0]}: {bad} row(s)")
    return found


def _date_and_time(model: Model, rows: dict[str, list[dict]]) -> list[str]:
    from datetime import datetime

    found = []
    for table, name, props in columns(model):
        if data_type(props) == "datetime" and table.name in rows:
            source = str(props.get("sourceColumn", name))
            if any(isinstance(r[source], datetime) and r[source].time() != datetime.min.time() for r in rows[table.name]):
                found.append(f"{table.name}[{name}]")
    return found


def _large_tables(model: Model, rows: dict[str, list[dict]]) -> list[str]:
    return [name for name in model.tables if len(rows.get(name, [])) > 25_000_000]


def _long_length(model: Model, rows: dict[str, list[dict]]) -> list[str]:
    """LongLengthRowCount > 500,000 needs more rows than that: a table under it cannot violate."""
    return [f"{name}[{column}]" for name, table in model.tables.items() for column, props in table.columns.items()
            if data_type(props) == "string" and len(rows.get(name, [])) > 500_000]


DATA_RULES: dict[str, Callable[[Model, dict[str, list[dict]]], list[str]]] = {
    "FIX_REFERENTIAL_INTEGRITY_VIOLATIONS": _ri_violations,
    "SPLIT_DATE_AND_TIME": _date_and_time,
    "LARGE_TABLES_SHOULD_BE_PARTITIONED": _large_tables,
    "REDUCE_USAGE_OF_LONG-LENGTH_COLUMNS_WITH_HIGH_CARDINALITY": _long_length,
}
assert set(DATA_RULES) == set(NOT_EVALUABLE)
