"""A minimal TMDL reader for the tests: tables with their columns (properties), measures and
partition (kind, source), the relationships, the expressions and the tables model.tmdl lists.

TMDL is indentation-structured text (tabs): ``table X`` at the top, ``column``/``measure``/
``partition`` one level in, their properties a level deeper, and multi-line DAX or M expressions
deeper still. That is all this reader knows; it is no validator of the language."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

NAME = r"'(?:[^']|'')*'|[^\s'=.:]+"
QUALIFIED = re.compile(rf"^({NAME})\.({NAME})$")


def unquote(name: str) -> str:
    name = name.strip()
    return name[1:-1].replace("''", "'") if name.startswith("'") else name


@dataclass
class Table:
    """Column properties carry ``description`` (the ``///`` lines) and, for a calculated column,
    ``expression`` (its DAX); a column without ``sourceColumn`` and without expression is no data column."""

    name: str
    properties: dict[str, str | bool] = field(default_factory=dict)
    columns: dict[str, dict[str, str | bool]] = field(default_factory=dict)
    measures: dict[str, str] = field(default_factory=dict)  # name → DAX expression
    measure_properties: dict[str, dict[str, str | bool]] = field(default_factory=dict)
    partition_kind: str | None = None  # "m" or "calculated"
    partition_source: str = ""
    partition_name: str | None = None


@dataclass
class Model:
    tables: dict[str, Table]
    relationships: list[tuple[tuple[str, str], tuple[str, str]]]  # (many table, column), (one table, column)
    expressions: dict[str, str]
    referenced_tables: list[str]
    relationship_properties: list[dict[str, str | bool]] = field(default_factory=list)  # in the same order
    properties: dict[str, str | bool] = field(default_factory=dict)  # model.tmdl's ``model`` properties


def _level(line: str) -> int:
    return len(line) - len(line.lstrip("\t"))


def _declaration(text: str) -> tuple[str, str, str | None]:
    """``kind name [= value]`` → (kind, name, value or None when there is no ``=``; "" when the value
    is on the following lines)."""
    kind, _, rest = text.partition(" ")
    match = re.match(rf"({NAME})\s*(=\s*(.*))?$", rest.strip())
    if not match:
        raise ValueError(f"cannot read TMDL declaration {text!r}")
    return kind, unquote(match.group(1)), (match.group(3) or "").strip() if match.group(2) else None


def _property(text: str) -> tuple[str, str | bool]:
    if ":" in text and not text.startswith(("annotation ", "changedProperty")):
        key, _, value = text.partition(":")
        return key.strip(), value.strip()
    return text.strip(), True


def _blocks(lines: list[str], descriptions: dict[int, str] | None = None) -> list[tuple[int, str, list[str]]]:
    """(level, first line, continuation lines deeper than it) for each non-blank, non-description line;
    ``descriptions`` (when given) receives the ``///`` text before a block, by the block's index."""
    out: list[tuple[int, str, list[str]]] = []
    pending: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.strip():
            continue
        if line.strip().startswith("///"):
            pending.append(line.strip()[3:].strip())
            continue
        level = _level(line)
        body: list[str] = []
        if line.rstrip().endswith("="):  # a multi-line expression follows, indented deeper
            while index < len(lines) and (not lines[index].strip() or _level(lines[index]) > level + 1):
                body.append(lines[index])
                index += 1
        if pending and descriptions is not None:
            descriptions[len(out)] = "\n".join(pending)
        pending = []
        out.append((level, line.strip(), body))
    return out


def _expression(first: str | None, body: list[str]) -> str:
    text = "\n".join(line.strip() for line in body if line.strip())
    return (first or "") + ("\n" + text if first and text else text)


def read_table(path: Path) -> Table:
    table: Table | None = None
    current: dict[str, str | bool] | None = None
    descriptions: dict[int, str] = {}
    for number, (level, text, body) in enumerate(_blocks(path.read_text(encoding="utf-8").splitlines(), descriptions)):
        description = descriptions.get(number)
        if level == 0:
            kind, name, _ = _declaration(text)
            assert kind == "table", f"{path}: {text!r}"
            table = Table(name)
            current = table.properties
            if description:
                table.properties["description"] = description
        elif level == 1:
            assert table is not None
            if text.startswith(("column ", "measure ", "partition ")):
                kind, name, value = _declaration(text)
                if kind == "column":
                    current = table.columns.setdefault(name, {})
                    if value is not None:
                        current["expression"] = _expression(value, body)
                elif kind == "measure":
                    table.measures[name] = _expression(value, body)
                    current = table.measure_properties.setdefault(name, {})
                else:
                    table.partition_kind = value
                    table.partition_name = name
                    current = {}
                if description and kind != "partition":
                    current["description"] = description
            elif text.startswith(("annotation ", "hierarchy ")):
                current = {}
            else:
                key, value = _property(text)
                table.properties[key] = value
                current = table.properties
        elif level == 2 and current is not None:
            if text.startswith("source =") and table is not None and table.partition_kind:
                table.partition_source = _expression(text.partition("=")[2].strip(), body)
            elif text.startswith("formatStringDefinition ="):
                current["formatStringDefinition"] = _expression(text.partition("=")[2].strip(), body)
            else:
                key, value = _property(text)
                current[key] = value
    assert table is not None, path
    return table


def _column_reference(text: str) -> tuple[str, str]:
    match = QUALIFIED.match(text.strip())
    assert match, text
    return unquote(match.group(1)), unquote(match.group(2))


def read_model(definition: Path) -> Model:
    tables = {t.name: t for t in (read_table(p) for p in sorted((definition / "tables").glob("*.tmdl")))}
    relationships = []
    relationship_properties: list[dict[str, str | bool]] = []
    many = one = None
    current: dict[str, str | bool] = {}
    for level, text, _ in _blocks((definition / "relationships.tmdl").read_text(encoding="utf-8").splitlines()):
        if level == 0:
            if many and one:
                relationships.append((many, one))
                relationship_properties.append(current)
            many = one = None
            current = {}
        elif text.startswith("fromColumn:"):
            many = _column_reference(text.partition(":")[2])
        elif text.startswith("toColumn:"):
            one = _column_reference(text.partition(":")[2])
        elif level == 1:
            key, value = _property(text)
            current[key] = value
    if many and one:
        relationships.append((many, one))
        relationship_properties.append(current)
    expressions = {}
    for level, text, body in _blocks((definition / "expressions.tmdl").read_text(encoding="utf-8").splitlines()):
        if level == 0:
            _, name, value = _declaration(text)
            expressions[name] = _expression(value, body)
    model_text = (definition / "model.tmdl").read_text(encoding="utf-8")
    referenced = [unquote(m) for m in re.findall(rf"^ref table ({NAME})\s*$", model_text, re.M)]
    properties: dict[str, str | bool] = {}
    for level, text, _ in _blocks(model_text.splitlines()):
        if level == 1 and not text.startswith("annotation "):
            key, value = _property(text)
            properties[key] = value
    return Model(tables, relationships, expressions, referenced, relationship_properties, properties)
