"""The APIM policies in policy/: well-formed, structurally valid, and in step with the event contract.

What is checked here, without an APIM instance:

* every policy file is well-formed XML as stored (format "xml": expressions XML-escaped, so the
  files parse with a plain XML parser and deploy unchanged), full policies have the four sections
  with ``<base />`` where inheritance is required, fragments are fragments and every
  ``include-fragment`` resolves to a file here;
* the C# policy expressions are balanced (parentheses, braces, brackets, string literals);
* the JSON property names the metering fragment writes, in order, are exactly the properties of
  policy/usage-event.schema.json (rename one side only and this fails);
* every ``{{named-value}}`` used is documented in policy/named-values.md and vice versa;
* the sample events in policy/examples/ validate against the schema, decode with
  ``metering.decode.decode_event``, carry no credentials, verify with the documented signing
  rule, and the full-mode stream is exactly the policy's compaction of a raw Azure stream;
* the header of an event survives APIM's 200 KB truncation.

``compact_sse`` and ``sign_event`` below mirror the C# in policy/metering.xml line for line; the
examples were generated with them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "policy"
SCHEMA_PATH = POLICY / "usage-event.schema.json"
EXAMPLES = sorted((POLICY / "examples").glob("*.json"))
POLICY_FILES = sorted(POLICY.glob("*.xml"))
NAMED_VALUES_DOC = POLICY / "named-values.md"

#: The key the signed examples were signed with (docs/policies.md); never use it for real.
EXAMPLE_HMAC_KEY = "example-hmac-key-do-not-use"
#: APIM truncates a log-to-eventhub message above 200 KB (taken as 200 × 1024 bytes).
EVENTHUB_LIMIT = 200 * 1024
#: Answer tokens that fit in one full-mode event after compaction (docs/policies.md).
DOCUMENTED_COMPACTED_TOKENS = 2700
#: ... and without compaction.
DOCUMENTED_RAW_TOKENS = 350

SECRET_HEADERS = {"authorization", "api-key", "ocp-apim-subscription-key"}
REPEATED_CHUNK_FIELDS = ("id", "object", "created", "model", "system_fingerprint")


# --------------------------------------------------------------------------- mirrors of the C#


def compact_json(obj: Any) -> str:
    """Newtonsoft ``Formatting.None``: no whitespace, raw UTF-8."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def compact_sse(text: str) -> str:
    """The full-mode SSE compaction of policy/metering.xml, step for step.

    Drops ``prompt_filter_results``, per-choice ``content_filter_results`` / ``content_filter_offsets``,
    null-valued fields of choices and deltas and ``usage: null``; drops choices left with only their
    index and chunks left with no choice and no usage; keeps id/object/created/model/system_fingerprint
    only where they first appear (or change). ``event:`` blocks (Responses API), unparseable blocks and
    ``[DONE]`` are kept as sent.
    """
    out: list[str] = []
    seen: dict[str, str] = {}
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block:
            continue
        event_name: str | None = None
        data: str | None = None
        for line in block.split("\n"):
            if line.startswith("event:"):
                event_name = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].lstrip() if data is None else data + "\n" + line[5:].lstrip()
        if data is None:
            continue
        if data == "[DONE]":
            out.append("data: [DONE]\n\n")
            continue
        try:
            chunk = json.loads(data)
        except ValueError:
            chunk = None
        if not isinstance(chunk, dict) or event_name is not None or ("choices" not in chunk and "usage" not in chunk):
            out.append(block + "\n\n")
            continue
        chunk.pop("prompt_filter_results", None)
        if "usage" in chunk and chunk["usage"] is None:
            del chunk["usage"]
        choices = chunk.get("choices")
        if isinstance(choices, list):
            for choice in [c for c in choices if isinstance(c, dict)]:
                choice.pop("content_filter_results", None)
                choice.pop("content_filter_offsets", None)
                for key in [k for k, v in choice.items() if v is None]:
                    del choice[key]
                delta = choice.get("delta")
                if isinstance(delta, dict):
                    for key in [k for k, v in delta.items() if v is None]:
                        del delta[key]
                if all(k == "index" or (k == "delta" and isinstance(v, dict) and not v) for k, v in choice.items()):
                    choices.remove(choice)
        else:
            choices = None
        if not choices and not isinstance(chunk.get("usage"), dict):
            continue
        for name in REPEATED_CHUNK_FIELDS:
            if name not in chunk:
                continue
            value = chunk[name] if isinstance(chunk[name], str) else compact_json(chunk[name])
            if name not in seen:
                seen[name] = value
            elif seen[name] == value:
                del chunk[name]
        out.append("data: " + compact_json(chunk) + "\n\n")
    return "".join(out)


def sign_event(unsigned_json: str, key: str) -> str:
    """The policy's signing: HMAC-SHA256 over the UTF-8 bytes of the compact JSON without
    ``signature``; the signature is appended as the last property."""
    mac = hmac.new(key.encode("utf-8"), unsigned_json.encode("utf-8"), hashlib.sha256).digest()
    assert unsigned_json.endswith("}")
    return unsigned_json[:-1] + ',"signature":"hmac-sha256=' + base64.b64encode(mac).decode("ascii") + '"}'


_SIGNATURE_SUFFIX = re.compile(rb',"signature":"hmac-sha256=([A-Za-z0-9+/]{43}=)"\}$')


def verify_signature(body: bytes, key: str) -> bool:
    """What a consumer does: strip the trailing signature property, re-close the object, compare."""
    match = _SIGNATURE_SUFFIX.search(body)
    if match is None:
        return False
    signed = body[: match.start()] + b"}"
    expected = hmac.new(key.encode("utf-8"), signed, hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64decode(match.group(1)), expected)


# --------------------------------------------------------------------------- raw Azure shapes

_SAFE = {"filtered": False, "severity": "safe"}
_CONTENT_FILTER = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
_PROMPT_FILTER = {
    "hate": _SAFE,
    "jailbreak": {"filtered": False, "detected": False},
    "self_harm": _SAFE,
    "sexual": _SAFE,
    "violence": _SAFE,
}
STREAM_ID = "chatcmpl-BEo4pQ2wz3Xr9TnLkY7aHc1VdJf8M"
STREAM_CREATED = 1772460311
STREAM_MODEL = "gpt-4o-2024-11-20"
STREAM_FINGERPRINT = "fp_ee1d74bde0"


def raw_azure_stream(pieces: list[str], usage: dict[str, Any] | None, *, usage_field: bool = True) -> str:
    """A chat completion stream exactly as Azure OpenAI sends it through APIM."""

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "choices": choices,
            "created": STREAM_CREATED,
            "id": STREAM_ID,
            "model": STREAM_MODEL,
            "object": "chat.completion.chunk",
            "system_fingerprint": STREAM_FINGERPRINT,
        }
        if usage_field:
            body["usage"] = None
        body.update(extra)
        return body

    events: list[dict[str, Any]] = [
        {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _PROMPT_FILTER}],
        },
        chunk([{
            "content_filter_results": {},
            "delta": {"content": "", "refusal": None, "role": "assistant"},
            "finish_reason": None,
            "index": 0,
            "logprobs": None,
        }]),
    ]
    for piece in pieces:
        events.append(chunk([{
            "content_filter_results": _CONTENT_FILTER,
            "delta": {"content": piece},
            "finish_reason": None,
            "index": 0,
            "logprobs": None,
        }]))
    events.append(chunk([{"content_filter_results": {}, "delta": {}, "finish_reason": "stop", "index": 0, "logprobs": None}]))
    if usage is not None:
        events.append(chunk([], usage=usage))
    return "".join(f"data: {compact_json(e)}\n\n" for e in events) + "data: [DONE]\n\n"


# --------------------------------------------------------------------------- helpers


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def example_bytes(path: Path) -> bytes:
    """An example exactly as the policy sends it: one line of compact JSON (the file's final newline is not part of it)."""
    return path.read_bytes().rstrip(b"\n")


def parse(path: Path) -> ET.Element:
    return ET.parse(path).getroot()


def is_fragment(path: Path) -> bool:
    return parse(path).tag == "fragment"


def fragment_id(path: Path) -> str:
    """Convention (docs/deployment.md): the fragment in policy/<stem>.xml is deployed as aoai-<stem>."""
    return "aoai-" + path.stem


def emitter_code() -> str:
    """The C# expression inside the metering fragment's log-to-eventhub (XML-decoded by the parser)."""
    node = parse(POLICY / "metering.xml").find(".//log-to-eventhub")
    assert node is not None and node.text is not None
    return node.text


def expressions(root: ET.Element) -> list[tuple[str, str]]:
    """Every policy expression in a document: (where, code) for attributes and element text."""
    found = []
    for element in root.iter():
        for name, value in element.attrib.items():
            if value.lstrip().startswith(("@(", "@{")):
                found.append((f"<{element.tag} {name}>", value.strip()))
        if element.text and element.text.strip().startswith(("@(", "@{")):
            found.append((f"<{element.tag}>", element.text.strip()))
    return found


def balanced(code: str) -> str | None:
    """None when (), {} and [] balance outside C# string/char literals and comments; else why not."""
    pairs = {")": "(", "}": "{", "]": "["}
    stack: list[str] = []
    i, n = 0, len(code)
    while i < n:
        ch = code[i]
        if code.startswith("//", i):
            end = code.find("\n", i)
            i = n if end < 0 else end
            continue
        if code.startswith("/*", i):
            end = code.find("*/", i + 2)
            if end < 0:
                return "unterminated /* comment"
            i = end + 2
            continue
        if code.startswith('@"', i):  # verbatim string: "" is an escaped quote
            i += 2
            while i < n:
                if code[i] == '"':
                    if i + 1 < n and code[i + 1] == '"':
                        i += 2
                        continue
                    break
                i += 1
            else:
                return "unterminated verbatim string"
            i += 1
            continue
        if ch in "\"'":
            quote, i = ch, i + 1
            while i < n and code[i] != quote:
                if code[i] == "\n":
                    return f"line break inside a {quote} literal"
                i += 2 if code[i] == "\\" else 1
            if i >= n:
                return f"unterminated {quote} literal"
            i += 1
            continue
        if ch in "({[":
            stack.append(ch)
        elif ch in ")}]":
            if not stack or stack.pop() != pairs[ch]:
                return f"unbalanced {ch!r} at offset {i}"
        i += 1
    return f"unclosed {stack}" if stack else None


def documented_named_values() -> dict[str, str]:
    """Rows of the table in policy/named-values.md: name → the rest of the row."""
    rows = {}
    for line in NAMED_VALUES_DOC.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\|\s*`([A-Za-z0-9._-]+)`\s*\|(.*)$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def used_named_values() -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    for path in POLICY_FILES:
        for name in re.findall(r"\{\{([^{}]*)\}\}", path.read_text(encoding="utf-8")):
            used.setdefault(name, set()).add(path.name)
    return used


def try_import_decode():
    try:
        from metering.decode.event import decode_event
    except ImportError as exc:  # the decoder is written in parallel; it exists by merge time
        pytest.skip(f"metering.decode.event is not importable yet: {exc}")
    return decode_event


# --------------------------------------------------------------------------- XML structure


def test_the_policy_folder_has_the_expected_files():
    names = {p.name for p in POLICY_FILES}
    assert {"metering.xml", "metering-inbound.xml", "global.xml", "product-aoai.xml", "api-aoai.xml"} <= names
    assert (POLICY / "backends.bicep").is_file()
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.name)
def test_policy_file_is_well_formed_xml_as_stored(path: Path):
    # Stored XML-encoded (ARM/Bicep format "xml"): a plain XML parser must accept the file as is,
    # so "<" and "&" inside expressions are written &lt; and &amp;.
    root = parse(path)
    assert root.tag in ("policies", "fragment"), f"{path.name}: root is <{root.tag}>"


@pytest.mark.parametrize("path", [p for p in POLICY_FILES if not is_fragment(p)], ids=lambda p: p.name)
def test_full_policy_has_four_sections_and_base_where_inheritance_is_needed(path: Path):
    root = parse(path)
    assert [child.tag for child in root] == ["inbound", "backend", "outbound", "on-error"], path.name
    sections = {child.tag: child for child in root}
    has_base = {tag: section.find("base") is not None for tag, section in sections.items()}
    forwards = sections["backend"].find(".//forward-request") is not None
    if path.name == "global.xml":
        # The top scope has nothing to inherit; it must forward the request itself.
        assert not any(has_base.values()), "global policy cannot use <base />"
        assert forwards, "global backend must forward the request"
    else:
        for tag in ("inbound", "outbound", "on-error"):
            assert has_base[tag], f"{path.name}: <{tag}> must inherit with <base />"
            first = sections[tag][0] if len(sections[tag]) else None
            assert first is not None and first.tag == "base", f"{path.name}: <base /> must come first in <{tag}>"
        assert has_base["backend"] or forwards, f"{path.name}: <backend> must inherit or forward"


@pytest.mark.parametrize("path", [p for p in POLICY_FILES if is_fragment(p)], ids=lambda p: p.name)
def test_fragment_has_no_sections_and_no_base(path: Path):
    root = parse(path)
    tags = {element.tag for element in root.iter()}
    assert not tags & {"inbound", "backend", "outbound", "on-error", "base", "policies"}, path.name


def test_every_included_fragment_exists():
    fragments = {fragment_id(p) for p in POLICY_FILES if is_fragment(p)}
    included = set()
    for path in POLICY_FILES:
        for node in parse(path).iter("include-fragment"):
            included.add(node.attrib["fragment-id"])
    assert included, "the API policy should include the metering fragments"
    assert included <= fragments, f"unknown fragment ids: {included - fragments}"
    assert fragments <= included, f"fragments never included: {fragments - included}"


def test_metering_fragments_are_included_in_the_right_sections():
    api = parse(POLICY / "api-aoai.xml")
    where = {
        section.tag: [n.attrib["fragment-id"] for n in section.iter("include-fragment")]
        for section in api
    }
    assert where["inbound"] == ["aoai-metering-inbound"]
    assert where["outbound"] == ["aoai-metering"] and where["on-error"] == ["aoai-metering"]
    # The event is built last in outbound, after every other outbound policy ran.
    assert list(api.find("outbound"))[-1].tag == "include-fragment"


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.name)
def test_policy_expressions_are_balanced_csharp(path: Path):
    found = expressions(parse(path))
    for where, code in found:
        problem = balanced(code)
        assert problem is None, f"{path.name} {where}: {problem}"
        if code.startswith("@{"):
            assert "return" in code, f"{path.name} {where}: a multi-statement expression must return"


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.name)
def test_attribute_expressions_have_no_line_comments(path: Path):
    # XML normalises line breaks inside attribute values to spaces, so a // comment in an
    # attribute expression would swallow the rest of the expression.
    for element in parse(path).iter():
        for name, value in element.attrib.items():
            if value.lstrip().startswith("@"):
                assert "//" not in re.sub(r'"[^"]*"', '""', value), f"{path.name} <{element.tag} {name}>"


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.name)
def test_json_formatting_is_named_in_full(path: Path):
    # System.Xml.XmlNodeType is an allowed type, so the gateway's compiler may import System.Xml,
    # where an unqualified Formatting is ambiguous with System.Xml.Formatting (CS0104). The runtime
    # tests compile with `using System.Xml;` too; this one holds where Mono is not installed.
    text = path.read_text(encoding="utf-8")
    assert not re.findall(r"(?<![\w.])Formatting\.", text), f"{path.name}: write Newtonsoft.Json.Formatting"


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.name)
def test_named_value_references_are_well_formed(path: Path):
    text = path.read_text(encoding="utf-8")
    assert text.count("{{") == len(re.findall(r"\{\{[A-Za-z0-9][A-Za-z0-9._-]*\}\}", text)), (
        f"{path.name}: '{{{{' that is not a named value reference (APIM would try to substitute it)"
    )


def test_gateway_uses_real_policies_with_the_documented_settings():
    api = parse(POLICY / "api-aoai.xml")
    mi = api.find(".//authentication-managed-identity")
    assert mi is not None and mi.attrib["resource"] == "https://cognitiveservices.azure.com"
    assert api.find(".//set-backend-service").attrib["backend-id"] == "{{aoai-backend-id}}"
    query = api.find(".//set-query-parameter")
    assert query.attrib == {"name": "api-version", "exists-action": "skip"}
    jwt = api.find(".//validate-jwt")
    assert jwt.attrib["output-token-variable-name"] == "aoaiJwt"
    assert [c.tag for c in jwt] == ["openid-config", "audiences", "issuers"]  # documented element order
    retry = api.find("backend/retry")
    assert retry is not None and "429" in retry.attrib["condition"] and ">= 500" in retry.attrib["condition"]
    assert "Retry-After" in retry.attrib["interval"]
    forward = retry.find("forward-request")
    assert forward.attrib == {"buffer-request-body": "true", "buffer-response": "false"}
    product = parse(POLICY / "product-aoai.xml")
    limit = product.find(".//azure-openai-token-limit")
    assert limit.attrib["counter-key"] == "@(context.Subscription.Id)"
    keys = [n.attrib["counter-key"] for p in POLICY_FILES for n in parse(p).iter("rate-limit-by-key")]
    assert any("IpAddress" in k for k in keys)
    assert any("Subscription.Id" in k for k in keys)
    assert any("Claims" in k for k in keys)


def test_log_to_eventhub_is_keyed_by_request_id_and_uses_a_named_logger():
    node = parse(POLICY / "metering.xml").find(".//log-to-eventhub")
    assert node.attrib["logger-id"] == "{{aoai-metering-logger-id}}"
    assert node.attrib["partition-key"] == "@(context.RequestId.ToString())"
    assert "partition-id" not in node.attrib


def test_backends_bicep_defines_members_with_circuit_breakers_and_a_pool():
    text = (POLICY / "backends.bicep").read_text(encoding="utf-8")
    assert "Microsoft.ApiManagement/service/backends@" in text
    assert "type: 'Pool'" in text and "type: 'Single'" in text
    for needle in ("circuitBreaker", "acceptRetryAfter: true", "priority: b.priority", "weight: b.weight", "min: 429"):
        assert needle in text


# --------------------------------------------------------------------------- event contract


def test_schema_is_a_valid_draft_2020_12_schema():
    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["schema", "requestId", "time"]
    assert schema["properties"]["capture"]["enum"] == ["usage", "request", "full"]
    assert schema["properties"]["signature"]["pattern"].startswith("^hmac-sha256=")
    for nullable in ("model", "usage", "request", "response"):
        assert "null" in schema["properties"][nullable]["type"], nullable
    assert "SIGNATURE RULE" in schema["description"]


def _policy_fields() -> list[str]:
    """Top-level names the emitter writes, in the order it first writes them, then the signature."""
    code = emitter_code()
    names: list[str] = []
    for name in re.findall(r'\be\["([A-Za-z]+)"\]\s*=', code):
        if name not in names:
            names.append(name)
    if ',\\"signature\\":\\"hmac-sha256=' in code:
        names.append("signature")
    return names


def _nested_fields(code: str) -> dict[str, set[str]]:
    """For each ``e["x"] = ...;`` statement, the JProperty names inside it."""
    nested = {}
    for match in re.finditer(r'\be\["([A-Za-z]+)"\]\s*=([^;]*);', code):
        props = set(re.findall(r'JProperty\("([A-Za-z]+)"', match.group(2)))
        if props:
            nested[match.group(1)] = props
    return nested


def _schema_children(prop: dict[str, Any]) -> set[str]:
    if "properties" in prop:
        return set(prop["properties"])
    for option in prop.get("oneOf", []):
        if "properties" in option:
            return set(option["properties"])
    return set()


def test_policy_writes_exactly_the_schema_properties_in_contract_order():
    schema = load_schema()
    assert _policy_fields() == list(schema["properties"]), (
        "policy/metering.xml and policy/usage-event.schema.json disagree on the aoai-usage/1 fields or their order"
    )


def test_nested_objects_written_by_the_policy_match_the_schema():
    schema = load_schema()["properties"]
    nested = _nested_fields(emitter_code())
    assert set(nested) == {"gateway", "subscription", "user", "backend"}
    for name, props in nested.items():
        assert props == _schema_children(schema[name]), name
    # The minimal fallback event only uses contract names too.
    allowed = set(schema) | {child for p in schema.values() for child in _schema_children(p)}
    assert set(re.findall(r'JProperty\("([A-Za-z]+)"', emitter_code())) <= allowed


def test_payloads_come_last_so_truncation_keeps_the_header():
    fields = list(load_schema()["properties"])
    assert fields[:3] == ["schema", "requestId", "time"]
    assert fields[-4:] == ["usage", "request", "response", "signature"]


def test_the_emitter_never_reads_credentials():
    code = emitter_code()
    for forbidden in ("Subscription.Key", "PrimaryKey", "SecondaryKey", "Body.As<string>(preserveContent: false)"):
        assert forbidden not in code
    deny_list = re.search(r"never = new HashSet<string>\(StringComparer\.OrdinalIgnoreCase\) \{(.*?)\};", code, re.S)
    assert deny_list is not None
    denied = set(re.findall(r'"([^"]+)"', deny_list.group(1)))
    assert SECRET_HEADERS <= denied


def test_signing_rule_in_policy_schema_and_docs_agree():
    code = emitter_code()
    assert "HMACSHA256(Encoding.UTF8.GetBytes(hmacKey))" in code
    assert "ComputeHash(Encoding.UTF8.GetBytes(json))" in code
    assert "json.Substring(0, json.Length - 1)" in code
    assert "Convert.ToBase64String(mac)" in code
    docs = (ROOT / "docs" / "policies.md").read_text(encoding="utf-8")
    assert ',"signature":"hmac-sha256=' in docs
    assert "aoai-metering-hmac-key" in load_schema()["description"]


# --------------------------------------------------------------------------- named values


def test_every_named_value_used_is_documented_and_every_documented_one_is_used():
    documented = documented_named_values()
    used = used_named_values()
    missing = {name: sorted(files) for name, files in used.items() if name not in documented}
    assert not missing, f"named values used in policy/*.xml but missing from policy/named-values.md: {missing}"
    unused = set(documented) - set(used)
    assert not unused, f"policy/named-values.md documents named values no policy uses: {sorted(unused)}"
    for name, row in documented.items():
        cells = [c.strip() for c in row.split("|")]
        assert len([c for c in cells if c]) >= 2, f"{name}: needs a meaning and an example"


# --------------------------------------------------------------------------- examples


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_one_line_of_compact_json_valid_against_the_schema(path: Path):
    body = example_bytes(path)
    assert b"\n" not in body, "the policy emits one line of compact JSON"
    event = json.loads(body)
    assert compact_json(event).encode("utf-8") == body, "not compact JSON as Newtonsoft Formatting.None writes it"
    errors = sorted(Draft202012Validator(load_schema()).iter_errors(event), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
    assert list(event)[: len(_policy_fields())] == [f for f in _policy_fields() if f in event], "field order"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_follows_the_capture_rules(path: Path):
    event = json.loads(example_bytes(path))
    lowered = {k.lower() for k in event.get("attributes", {})}
    assert not lowered & SECRET_HEADERS
    if event["capture"] == "usage":
        assert event["request"] is None and event["response"] is None
    if event["capture"] == "request":
        assert event["response"] is None
    if "embedding" in (event.get("operation") or "").lower():
        assert event["response"] is None, "embedding vectors are never attached"
        assert '"embedding"' not in body_text(path)


def body_text(path: Path) -> str:
    return example_bytes(path).decode("utf-8")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_decodes_with_the_pipeline_decoder(path: Path):
    decode_event = try_import_decode()
    event = json.loads(example_bytes(path))
    decoded = decode_event(example_bytes(path), source_partition="7", source_sequence_number=1234)
    assert decoded.request_id == event["requestId"]
    assert decoded.subscription_id == event["subscription"]["id"]
    assert decoded.status_code == event["status"]
    assert decoded.is_streaming == event["stream"]
    assert decoded.capture == event["capture"]
    assert decoded.deployment == (event["deployment"] or None)
    assert decoded.model == event["model"]
    assert decoded.usage == event["usage"]
    assert decoded.backend_region == event["backend"]["region"]
    assert decoded.attributes == event["attributes"]
    assert (decoded.source_partition, decoded.source_sequence_number) == ("7", 1234)


def test_signed_example_verifies_and_tampering_is_detected():
    signed = [p for p in EXAMPLES if b'"signature":"hmac-sha256=' in example_bytes(p)]
    assert signed, "at least one example is signed"
    for path in signed:
        body = example_bytes(path)
        assert verify_signature(body, EXAMPLE_HMAC_KEY), path.name
        assert not verify_signature(body, "another-key")
        assert not verify_signature(body.replace(b'"status":200', b'"status":201'), EXAMPLE_HMAC_KEY)
        event = json.loads(body)
        assert list(event)[-1] == "signature"
        unsigned = compact_json({k: v for k, v in event.items() if k != "signature"})
        assert sign_event(unsigned, EXAMPLE_HMAC_KEY).encode("utf-8") == body


def test_full_mode_stream_example_is_the_compaction_of_a_raw_azure_stream():
    event = json.loads(example_bytes(POLICY / "examples" / "chat-stream-full.json"))
    assert event["capture"] == "full" and event["stream"] is True
    pieces = event_pieces(event["response"])
    raw = raw_azure_stream(pieces, event["usage"])
    assert compact_sse(raw) == event["response"]
    assert compact_sse(event["response"]) == event["response"], "compaction is idempotent"
    response = event["response"]
    for dropped in ("content_filter_results", "prompt_filter_results", '"logprobs"', '"usage":null', '"refusal":null'):
        assert dropped not in response
    for field in REPEATED_CHUNK_FIELDS:
        assert response.count(f'"{field}":') == 1, field
    events = [b for b in response.split("\n\n") if b]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["usage"] == event["usage"], "the usage chunk is kept, last before [DONE]"


def event_pieces(compacted: str) -> list[str]:
    pieces = []
    for block in compacted.split("\n\n"):
        if block.startswith("data: {"):
            for choice in json.loads(block[6:]).get("choices", []):
                content = choice.get("delta", {}).get("content")
                if content:
                    pieces.append(content)
    return pieces


def test_compacted_stream_rebuilds_to_the_same_answer_and_usage():
    try:
        from metering.usage.sse import rebuild_stream
    except ImportError as exc:
        pytest.skip(f"metering.usage.sse is not importable yet: {exc}")
    pieces = ["Sure", "!", " Here", " is", " a", " haiku", ":\n\n", "Autumn", " moonlight", "—", "\n"]
    usage = {"completion_tokens": 11, "prompt_tokens": 20, "total_tokens": 31}
    raw = raw_azure_stream(pieces, usage)
    raw_view, compact_view = rebuild_stream(raw), rebuild_stream(compact_sse(raw))
    assert compact_view.text == raw_view.text == "".join(pieces)
    assert (compact_view.usage, compact_view.model, compact_view.id) == (raw_view.usage, raw_view.model, raw_view.id)
    assert (compact_view.kind, compact_view.complete) == ("chat.completions", True)
    assert [c.finish_reason for c in compact_view.choices] == ["stop"]


# --------------------------------------------------------------------------- size and truncation


def _full_event(pieces: list[str]) -> bytes:
    """A full-mode streamed event as the policy builds it, around the chat-stream-full example."""
    template = json.loads(example_bytes(POLICY / "examples" / "chat-stream-full.json"))
    template.pop("signature", None)
    usage = {"completion_tokens": len(pieces), "prompt_tokens": 57, "total_tokens": 57 + len(pieces)}
    template["usage"] = usage
    template["response"] = compact_sse(raw_azure_stream(pieces, usage))
    return sign_event(compact_json(template), EXAMPLE_HMAC_KEY).encode("utf-8")


def _raw_full_event(pieces: list[str]) -> bytes:
    template = json.loads(_full_event(pieces))
    template.pop("signature")
    template["response"] = raw_azure_stream(pieces, template["usage"])
    return compact_json(template).encode("utf-8")


def test_documented_answer_sizes_fit_in_one_event():
    # " the": a typical English token (o200k averages ~4.2 characters per token).
    words = [" the"] * DOCUMENTED_COMPACTED_TOKENS
    assert len(_full_event(words)) <= EVENTHUB_LIMIT
    assert len(_raw_full_event(words)) > 3 * EVENTHUB_LIMIT, "compaction is what makes it fit"
    assert len(_raw_full_event([" the"] * DOCUMENTED_RAW_TOKENS)) <= EVENTHUB_LIMIT
    assert len(_raw_full_event([" the"] * (DOCUMENTED_RAW_TOKENS + 50))) > EVENTHUB_LIMIT


def test_a_truncated_event_still_yields_its_header_and_usage():
    body = _full_event([" token"] * 4000)
    assert len(body) > EVENTHUB_LIMIT
    cut = body[:EVENTHUB_LIMIT]  # what APIM forwards
    with pytest.raises(ValueError):
        json.loads(cut)
    # Everything before the first payload is intact: a consumer can close the object there.
    head = cut[: cut.index(b',"request":')] + b"}"
    header = json.loads(head)
    assert header["requestId"] and header["subscription"]["id"] and header["status"] == 200
    assert header["usage"]["completion_tokens"] == 4000, "usage precedes the payloads"
    assert not verify_signature(cut, EXAMPLE_HMAC_KEY), "the signature is lost with the tail"
