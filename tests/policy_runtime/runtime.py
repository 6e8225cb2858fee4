"""Run the APIM policies in ``policy/`` for real: compile their C# expressions with Mono and execute
the gateway sequence on scenarios (tests/test_policy_runtime.py).

How it works:

1. ``compose(profile)`` substitutes the profile's named values into the policy text (as APIM does,
   before anything is compiled), parses the XML (so entities are decoded), builds one API's
   effective policy — global → product → API with every ``<base />`` and ``include-fragment``
   expanded — and replaces each ``@(…)``/``@{…}`` by ``@#N``.
2. ``build(profile)`` writes the expressions as methods of one C# class, compiles them with
   ``mcs -langversion:7`` together with ``Context.cs`` (the documented ``context`` interfaces only)
   and ``Gateway.cs`` (the emulator) into one assembly per profile, and caches it for the session.
3. ``run(profile, scenarios)`` feeds JSON scenarios to ``mono gateway.exe run`` and returns what the
   gateway did (events, forwarded requests, response, retry waits, errors).
4. ``allow_list_check(profile)`` lists every .NET type or member the compiled expressions use
   that APIM's allow-list does not permit. The allow-list is the table of the public
   policy-expressions article, read from the shared folder (``reference/apim-policy-allowed-types.md``,
   origin in tests/data/origins.csv) and written as ``allowed-types.txt`` for the emulator.

Without Mono (``mcs`` and ``mono`` on PATH, Newtonsoft.Json from ``libnewtonsoft-json-cil-dev``)
``toolchain_problem()`` says why, and the tests skip — or fail when ``METERING_REQUIRE_MONO=1``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared_folder import APIM_ALLOWED_TYPES, shared_path

HERE = Path(__file__).resolve().parent
POLICY = HERE.parent.parent / "policy"
NAMED_VALUE = re.compile(r"\{\{([A-Za-z0-9._-]+)\}\}")
NEWTONSOFT_CANDIDATES = [
    Path("/usr/lib/cli/Newtonsoft.Json-5.0/Newtonsoft.Json.dll"),
    *sorted(Path("/usr/lib/cli").glob("Newtonsoft.Json*/Newtonsoft.Json.dll")),
    *sorted(Path("/usr/lib/mono/gac/Newtonsoft.Json").glob("*/Newtonsoft.Json.dll")),
]
# Namespaces APIM puts in scope for expressions (its documented examples use Regex, Encoding,
# Convert, JObject, … unqualified). System.Xml too: System.Xml.XmlNodeType is on the gateway's list
# of allowed types, so its compiler may import the namespace, where an unqualified ``Formatting`` is
# ambiguous (System.Xml.Formatting, Newtonsoft.Json.Formatting: CS0104); with it here, such a
# policy fails to compile in the suite as it would on the gateway.
USINGS = [
    "System", "System.Collections.Generic", "System.Linq", "System.Text", "System.Text.RegularExpressions",
    "System.Xml", "System.Xml.Linq", "Newtonsoft.Json", "Newtonsoft.Json.Linq", "Apim.Documented",
]
# APIM's scopes, outermost first, and the file of each (the API's product is "ai-standard").
SCOPES = [("global", "global.xml"), ("product", "product-aoai.xml"), ("api", "api-aoai.xml")]
SECTIONS = ["inbound", "backend", "outbound", "on-error"]


def documented_named_values() -> dict[str, str]:
    """Every named value with the example value from policy/named-values.md."""
    values = {}
    for line in (POLICY / "named-values.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`") and cells[3].startswith("`"):
            values[cells[0].strip("`")] = cells[3].strip("`")
    return values


def newtonsoft() -> Path | None:
    return next((p for p in NEWTONSOFT_CANDIDATES if p.is_file()), None)


def toolchain_problem() -> str | None:
    """Why the runtime cannot run here, or ``None`` when Mono and Newtonsoft.Json are installed."""
    missing = [tool for tool in ("mcs", "mono") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found: apt-get install mono-mcs mono-devel libnewtonsoft-json-cil-dev"
    if newtonsoft() is None:
        return "Newtonsoft.Json.dll not found: apt-get install libnewtonsoft-json-cil-dev"
    return None


@dataclass
class Expression:
    """One policy expression: where it came from and its C# code (entities decoded, values substituted)."""

    origin: str
    code: str

    @property
    def is_block(self) -> bool:
        return self.code.startswith("@{")

    def method(self, index: int) -> str:
        body = self.code[2:-1] if not self.is_block else self.code[1:]
        if not self.is_block:
            body = "{ return (" + body + "); }"
        return f"        // {self.origin}\n        public static object E{index}(IProxyRequestContext context)\n        {body}\n"


@dataclass
class Composed:
    """An API's effective policy (expressions replaced by ``@#N``) and its expressions."""

    plan: ET.Element
    expressions: list[Expression] = field(default_factory=list)


def load(name: str, values: dict[str, str]) -> ET.Element:
    """A policy file with named values substituted into its text, parsed (entities decoded)."""
    text = (POLICY / name).read_text()

    def value(match: re.Match[str]) -> str:
        if match.group(1) not in values:
            raise KeyError(f"{name} uses the named value {match.group(1)!r}, which the profile does not define")
        return values[match.group(1)]

    return ET.fromstring(NAMED_VALUE.sub(value, text))


def _fragments(values: dict[str, str]) -> dict[str, ET.Element]:
    """Fragments by id: ``policy/<stem>.xml`` with a ``<fragment>`` root deploys as ``aoai-<stem>``."""
    found = {}
    for path in sorted(POLICY.glob("*.xml")):
        root = load(path.name, values)
        if root.tag == "fragment":
            found[f"aoai-{path.stem}"] = root
    return found


def _is_expression(text: str | None) -> bool:
    return text is not None and (text.startswith("@(") or text.startswith("@{"))


def compose(values: dict[str, str]) -> Composed:
    """global → product → API, with ``<base />`` and ``include-fragment`` expanded, as APIM runs it."""
    roots = [(scope, load(name, values), name) for scope, name in SCOPES]
    fragments = _fragments(values)
    composed = Composed(ET.Element("policies"))

    def expand(elements: list[ET.Element], scope: str, source: str, level: int, section: str) -> list[ET.Element]:
        out = []
        for element in elements:
            if element.tag == "base":
                if level > 0:
                    out += section_of(level - 1, section)
                continue
            if element.tag == "include-fragment":
                fragment_id = element.attrib["fragment-id"]
                out += expand(list(fragments[fragment_id]), scope, f"{fragment_id[5:]}.xml", level, section)
                continue
            copy = ET.Element(element.tag, dict(element.attrib))
            copy.text, copy.tail = element.text, None
            copy.set("_scope", scope)
            copy.set("_source", source)
            copy.extend(expand(list(element), scope, source, level, section))
            out.append(copy)
        return out

    def section_of(level: int, section: str) -> list[ET.Element]:
        scope, root, name = roots[level]
        found = root.find(section)
        return expand(list(found), scope, name, level, section) if found is not None else []

    for section in SECTIONS:
        element = ET.SubElement(composed.plan, section)
        element.extend(section_of(len(roots) - 1, section))

    for element in composed.plan.iter():
        source = element.get("_source", "")
        for name, value in list(element.attrib.items()):
            if _is_expression(value):
                composed.expressions.append(Expression(f"{source} <{element.tag} {name}>", value.strip()))
                element.set(name, f"@#{len(composed.expressions) - 1}")
        text = (element.text or "").strip()
        if _is_expression(text):
            composed.expressions.append(Expression(f"{source} <{element.tag}> text", text))
            element.text = f"@#{len(composed.expressions) - 1}"
    return composed


def expressions_in_files() -> list[str]:
    """Every expression in policy/*.xml, read file by file (independently of ``compose``)."""
    found = []
    values = documented_named_values()
    for path in sorted(POLICY.glob("*.xml")):
        for element in load(path.name, values).iter():
            found += [v.strip() for v in element.attrib.values() if _is_expression(v.strip())]
            if _is_expression((element.text or "").strip()):
                found.append(element.text.strip())
    return found


def csharp(composed: Composed, extra: str = "") -> str:
    """The generated C#: the expressions, their table, and the plan the emulator runs."""
    usings = "".join(f"using {u};\n" for u in USINGS)
    methods = "".join(e.method(i) for i, e in enumerate(composed.expressions))
    table = ", ".join(f"Expressions.E{i}" for i in range(len(composed.expressions)))
    origins = ", ".join(json.dumps(e.origin) for e in composed.expressions)
    plan = ET.tostring(composed.plan, encoding="unicode").replace('"', '""')
    return f"""// Generated by tests/policy_runtime/runtime.py from policy/*.xml. Do not edit.
{usings}
namespace Apim.Policies
{{
    public static class Expressions
    {{
{methods}{extra}
    }}

    public static class ExpressionTable
    {{
        public static readonly Func<IProxyRequestContext, object>[] Table = {{ {table} }};
        public static readonly string[] Origins = {{ {origins} }};
        public static string OriginOf(string method)
        {{
            int index;
            return method.StartsWith("E") && int.TryParse(method.Substring(1), out index) && index < Origins.Length ? Origins[index] : method;
        }}
    }}

    public static class PolicyPlan
    {{
        public const string Xml = @"{plan}";
    }}
}}
"""


class CompileError(AssertionError):
    """mcs rejected the generated code; the message shows each error with the policy it came from."""


class PolicyRuntime:
    """Builds (once per profile and session) and runs the emulated gateway."""

    def __init__(self, workdir: Path | None = None):
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="policy-runtime-"))
        self._builds: dict[str, Path] = {}
        self._lock = threading.Lock()

    def build(self, values: dict[str, str], extra: str = "") -> Path:
        """The compiled gateway for these named values (cached by the generated source's hash)."""
        source = csharp(compose(values), extra)
        digest = hashlib.sha256(source.encode()).hexdigest()[:16]
        with self._lock:
            if digest in self._builds:
                return self._builds[digest]
        out = self.workdir / digest
        out.mkdir(parents=True, exist_ok=True)
        (out / "Policies.cs").write_text(source)
        dll = newtonsoft()
        shutil.copy(dll, out / "Newtonsoft.Json.dll")
        command = [
            "mcs", "-langversion:7", "-nologo", "-warn:0", "-target:exe", f"-out:{out / 'gateway.exe'}",
            f"-r:{out / 'Newtonsoft.Json.dll'}", "-r:System.Xml.Linq", "-r:System.Xml", "-r:System.Core",
            str(HERE / "Context.cs"), str(HERE / "Gateway.cs"), str(out / "Policies.cs"),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise CompileError(self._explain(result.stdout + result.stderr, source))
        with self._lock:
            self._builds[digest] = out / "gateway.exe"
        return out / "gateway.exe"

    @staticmethod
    def _explain(output: str, source: str) -> str:
        """mcs errors with the policy expression each one is in."""
        lines = source.splitlines()
        explained = []
        for line in output.splitlines():
            match = re.match(r".*Policies\.cs\((\d+),\d+\): error", line)
            if match:
                origin = next((lines[i].strip() for i in range(int(match.group(1)) - 1, -1, -1)
                               if lines[i].strip().startswith("// ")), "")
                explained.append(f"{line}\n    in {origin[3:]}")
            elif "error" in line:
                explained.append(line)
        return "\n".join(explained) or output

    def run(self, values: dict[str, str], scenarios: list[dict[str, Any]]) -> list[dict[str, Any]]:
        exe = self.build(values)
        result = subprocess.run(["mono", str(exe), "run"], input=json.dumps(scenarios).encode(),
                                capture_output=True, timeout=120)
        if result.returncode != 0:
            raise AssertionError(f"the gateway emulator failed: {result.stderr.decode(errors='replace')}")
        return json.loads(result.stdout)

    def allow_list_check(self, values: dict[str, str], extra: str = "") -> dict[str, list[str]]:
        """``violations``: what APIM would refuse; ``referenced``: every ``Type::member`` the expressions use."""
        exe = self.build(values, extra)
        allowed = self.workdir / "allowed-types.txt"
        if not allowed.is_file():
            text = shared_path(APIM_ALLOWED_TYPES).read_text(encoding="utf-8")
            allowed.write_text("\n".join(allowed_types_lines(text)) + "\n", encoding="utf-8")
        result = subprocess.run(["mono", str(exe), "check", str(allowed)],
                                capture_output=True, timeout=120)
        if result.returncode != 0:
            raise AssertionError(f"the allow-list check failed: {result.stderr.decode(errors='replace')}")
        return json.loads(result.stdout)

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def allowed_types_lines(reference: str) -> list[str]:
    """The allow-list table (``|Type|members|`` rows of the policy-expressions article) as Gateway.cs
    reads it: ``Type: member, member``, with ``All`` for every member and ``All, -Load`` for the
    article's "All, except of: Load"."""
    lines = []
    for row in reference.splitlines():
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")] if row.startswith("|") else []
        if len(cells) != 2 or not cells[0] or set(cells[0]) <= {"-", ":"} or cells[0] == "Type":
            continue
        kind, members = cells
        members = re.sub(r"^All, except of:\s*", "All, -", members)
        lines.append(f"{kind}: {members}")
    if len(lines) < 100:
        raise ValueError(f"the allow-list table has {len(lines)} rows: not the policy-expressions article's table")
    return lines


def require_mono() -> bool:
    """``METERING_REQUIRE_MONO=1`` (set by .ci/run when Mono is installed) makes a missing toolchain a failure."""
    return os.environ.get("METERING_REQUIRE_MONO", "") == "1"
