"""Offline checks of the Bicep files against Microsoft's generated Bicep types (Azure/bicep-types-az).

The Bicep files are parsed by pycep-parser in the infra tools' Python (``parse_bicep.py``); the type
files are a subset of bicep-types-az (``infra/tools/bicep_types_subset.py``). A resource body is
checked where the Bicep writes literal objects: each property name must exist in the type, no
read-only property may be set, and every required property must be there. Values that are
expressions (parameters, functions, conditions) are checked on both branches of a condition and
through loops, and otherwise left to the deployment."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
REQUIRED, READ_ONLY = 1, 2
# Bicep's own keywords in a resource body, not properties of the resource type.
BICEP_KEYWORDS = {"parent", "dependsOn", "scope"}
TYPES_SETTING = "METERING_BICEP_TYPES_DIR"
PYTHON_SETTING = "METERING_INFRA_PYTHON"
REQUIRE_SETTING = "METERING_REQUIRE_INFRA_TOOLS"


def bicep_files() -> list[Path]:
    return sorted([*ROOT.glob("infra/**/*.bicep"), *ROOT.glob("policy/*.bicep")])


def required() -> bool:
    """``METERING_REQUIRE_INFRA_TOOLS=1`` (set by .ci/run once the tools installed) turns a skip into a failure."""
    return os.environ.get(REQUIRE_SETTING, "") == "1"


def infra_python() -> Path | None:
    """The Python with pycep-parser and checkov: METERING_INFRA_PYTHON, else the repository's .venv-infra."""
    for candidate in (os.environ.get(PYTHON_SETTING), ROOT / ".venv-infra" / "bin" / "python"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def parse_all(python: Path, paths: list[Path]) -> dict[Path, dict[str, Any]]:
    result = subprocess.run([str(python), str(HERE / "parse_bicep.py"), *map(str, paths)], capture_output=True,
                            text=True, timeout=600, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"parse_bicep.py failed: {result.stderr[-2000:]}")
    return {Path(k): v for k, v in json.loads(result.stdout).items()}


class TypeIndex:
    """``type@apiVersion`` (case-insensitive) → the resource's body type, from a folder of types.json files."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._files: dict[Path, list[dict[str, Any]]] = {}
        self.resources: dict[str, tuple[Path, int]] = {}
        for path in sorted(folder.glob("**/types.json")):
            types = json.loads(path.read_text(encoding="utf-8"))
            self._files[path] = types
            for entry in types:
                if entry.get("$type") == "ResourceType":
                    self.resources.setdefault(entry["name"].lower(), (path, _ref(entry["body"])))

    def body(self, type_name: str, version: str) -> tuple[Path, dict[str, Any]] | None:
        hit = self.resources.get(f"{type_name}@{version}".lower())
        if hit is None:
            return None
        return hit[0], self._files[hit[0]][hit[1]]

    def resolve(self, path: Path, ref: dict[str, Any]) -> dict[str, Any]:
        return self._files[path][_ref(ref)]


def _ref(ref: dict[str, Any]) -> int:
    return int(ref["$ref"].rsplit("/", 1)[1])


def _is_expression(value: Any) -> bool:
    return isinstance(value, dict) and (set(value) & {"operator", "function"}) != set() and len(value) == 1


def _unquote(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == "'" else key


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)
    checked: int = 0

    def add(self, where: str, text: str) -> None:
        self.problems.append(f"{where}: {text}")


def check_value(index: TypeIndex, path: Path, type_def: dict[str, Any], value: Any, where: str, out: Findings) -> None:
    """Check one Bicep value against one type (objects, arrays, unions, discriminated objects)."""
    kind = type_def.get("$type")
    if isinstance(value, dict) and "loop_type" in value and "config" in value:   # [for x in y: {...}]
        if kind == "ArrayType":
            check_value(index, path, index.resolve(path, type_def["itemType"]), value["config"], f"{where}[]", out)
        else:
            check_value(index, path, type_def, value["config"], where, out)
        return
    if isinstance(value, dict) and _is_expression(value):
        op = value.get("operator")
        if isinstance(op, dict) and op.get("type") == "conditional":
            for branch in ("true_value", "false_value"):
                check_value(index, path, type_def, op["operands"][branch], f"{where}({branch})", out)
        return
    if kind == "UnionType":
        objects = [index.resolve(path, e) for e in type_def["elements"]]
        objects = [o for o in objects if o.get("$type") in ("ObjectType", "DiscriminatedObjectType")]
        if isinstance(value, dict) and len(objects) == 1:
            check_value(index, path, objects[0], value, where, out)
        return
    if kind == "ArrayType" and isinstance(value, list):
        item = index.resolve(path, type_def["itemType"])
        for i, element in enumerate(value):
            check_value(index, path, item, element, f"{where}[{i}]", out)
        return
    if kind == "DiscriminatedObjectType" and isinstance(value, dict):
        literal = value.get(type_def["discriminator"])
        elements = type_def["elements"]
        properties = dict(type_def.get("baseProperties", {}))
        if isinstance(literal, str) and literal in elements:
            properties.update(index.resolve(path, elements[literal]).get("properties", {}))
            check_object(index, path, properties, None, value, where, out)
        else:   # the discriminator is an expression: accept any element's properties
            for element in elements.values():
                properties.update(index.resolve(path, element).get("properties", {}))
            check_object(index, path, properties, None, value, where, out, check_required=False)
        return
    if kind == "ObjectType" and isinstance(value, dict):
        check_object(index, path, type_def.get("properties", {}), type_def.get("additionalProperties"), value, where, out)


def check_object(index: TypeIndex, path: Path, properties: dict[str, Any], additional: dict[str, Any] | None,
                 value: dict[str, Any], where: str, out: Findings, check_required: bool = True) -> None:
    given = {_unquote(k): v for k, v in value.items()}
    known = {name.lower(): name for name in properties}
    for name, item in given.items():
        canonical = known.get(name.lower())
        if canonical is None:
            if additional is None:
                out.add(where, f"property {name!r} is not in the type")
            else:
                check_value(index, path, index.resolve(path, additional), item, f"{where}.{name}", out)
            continue
        if canonical != name:
            out.add(where, f"property {name!r} is spelled {canonical!r} in the type")
        spec = properties[canonical]
        if spec.get("flags", 0) & READ_ONLY and not spec.get("flags", 0) & REQUIRED:
            out.add(where, f"property {name!r} is read-only")
        check_value(index, path, index.resolve(path, spec["type"]), item, f"{where}.{name}", out)
    if check_required:
        for name, spec in properties.items():
            if spec.get("flags", 0) & REQUIRED and name.lower() not in {k.lower() for k in given}:
                out.add(where, f"required property {name!r} is missing")


def resource_body(config: dict[str, Any]) -> dict[str, Any]:
    """The object of a resource declaration, through its loop and condition wrappers."""
    while isinstance(config, dict) and "config" in config and ("loop_type" in config or "condition" in config):
        config = config["config"]
    return config


def check_resources(index: TypeIndex, parsed: dict[Path, dict[str, Any]]) -> Findings:
    out = Findings()
    for file, document in parsed.items():
        for symbol, resource in document.get("resources", {}).items():
            where = f"{file.relative_to(ROOT)} {symbol} ({resource['type']}@{resource['api_version']})"
            found = index.body(resource["type"], resource["api_version"])
            if found is None:
                out.add(where, "type@apiVersion is not in Microsoft's generated Bicep types")
                continue
            out.checked += 1
            if resource.get("existing"):
                continue
            types_file, body = found
            config = {k: v for k, v in resource_body(resource["config"]).items() if k not in BICEP_KEYWORDS}
            check_value(index, types_file, body, config, where, out)
    return out


def check_modules(parsed: dict[Path, dict[str, Any]]) -> Findings:
    """Each module call passes only parameters its file declares, and every one without a default."""
    out = Findings()
    documents = {p.resolve(): d for p, d in parsed.items()}
    for file, document in parsed.items():
        for symbol, module in document.get("modules", {}).items():
            relative = module["detail"]["path"]
            target = (file.parent / relative).resolve()
            where = f"{file.relative_to(ROOT)} module {symbol} ({relative})"
            if target not in documents:
                out.add(where, "module file is not among the parsed Bicep files")
                continue
            declared = documents[target].get("parameters", {})
            params = resource_body(module["config"]).get("params", {})
            given = {_unquote(k) for k in params} if isinstance(params, dict) and not _is_expression(params) else None
            out.checked += 1
            if given is None:
                continue
            for name in sorted(given - set(declared)):
                out.add(where, f"parameter {name!r} is not declared by the module")
            for name, spec in declared.items():
                if spec.get("default") is None and name not in given:
                    out.add(where, f"parameter {name!r} has no default and is not passed")
    return out
