"""`metering batch import` streams a job's output files line by line, each line bounded
(``--max-line-bytes``, default 256 MiB: a line is one whole response, and embeddings responses are
megabytes): an over-long line is one line of error naming its file and line, and a 50,000-line output
file (Azure output files hold up to 100,000) is metered in flat memory.

The lines follow Azure OpenAI's batch how-to (output file: ``{"custom_id", "response": {"body",
"request_id", "status_code"}, "error"}`` with a ``chat.completion`` body and its ``usage``).
"""

from __future__ import annotations

import tracemalloc
from datetime import datetime, timezone
from decimal import Decimal

import orjson
import pytest
import sqlalchemy as sa

from cli_runner import run
from db import rate_card as rate_card_store
from db.engine import make_engine
from db.migrate import upgrade
from db.schema import usage_records
from metering.price.mappings import parse_deployments_csv
from metering.price.rate_card import parse_rates_csv
from metering.sources.batch_outputs import BatchOutputError, output_file_lines, read_batch_output

BATCH_ID = "batch_1f0c6a52-8e3b-4a8e-9d7e-2f41c2f9a0d3"
CARD = (
    "model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,output_per_1m\n"
    "gpt-4o,global-batch,,2024-08-06,,USD,1.25,,5.00\n"
)
ANSWER = ("Claim 48213 concerns water damage to a kitchen ceiling after a burst pipe in the flat above; "
          "the policy covers escape of water, the excess is 250 EUR, and no exclusion applies. ") * 2


def output_line(index: int, status: int = 200, padding: int = 0) -> bytes:
    """One line of an output file: a chat completion of task ``index`` (``padding``: a longer answer)."""
    prompt, completion = 900 + index % 50, 120 + index % 7
    body = {"id": f"chatcmpl-{index}", "object": "chat.completion", "created": 1792_050_000, "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": ANSWER + "x" * padding}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                      "prompt_tokens_details": {"cached_tokens": 0}}}
    if status != 200:
        body = {"error": {"code": "content_filter", "message": "The response was filtered"}}
    return orjson.dumps({"id": f"batch_req_{index}", "custom_id": f"claim-{index}",
                         "response": {"status_code": status, "request_id": f"req-{index}", "body": body},
                         "error": None})


def migrated(url: str) -> None:
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        rate_card_store.replace_rates(conn, parse_rates_csv(CARD))
        rate_card_store.replace_deployments(conn, parse_deployments_csv(
            "backend_id,deployment,model,deployment_type\n,gpt-4o-batch,gpt-4o,global-batch\n"))
    engine.dispose()


def batch_rows(url: str) -> list:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = conn.execute(sa.select(usage_records).where(usage_records.c.request_id.like("batch:%"))).all()
    engine.dispose()
    return found


def test_an_over_long_line_is_refused_naming_its_file_and_line(sqlite_url, tmp_path, capsys, monkeypatch):
    migrated(sqlite_url)
    first, second = tmp_path / "output-part1.jsonl", tmp_path / "output-part2.jsonl"
    first.write_bytes(b"\n".join(output_line(i) for i in range(3)) + b"\n")
    # line 3 of the second file: an answer of 40 KB, above a 16 KiB bound
    second.write_bytes(b"\n".join([output_line(3), b"", output_line(4, padding=40_000), output_line(5)]) + b"\n")
    code, out, err = run(capsys, "--db", sqlite_url, "batch", "import", str(first), str(second), "--batch-id", BATCH_ID,
                         "--deployment", "gpt-4o-batch", "--max-line-bytes", str(16 * 1024))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{second} line 3: {len(output_line(4, padding=40_000)):,} bytes, above the 16,384-byte bound" in err
    assert "--max-line-bytes" in err
    assert batch_rows(sqlite_url) == []  # nothing metered from a file that was not read whole
    # with the default bound the same files are metered: 6 requests (the event bound does not apply)
    monkeypatch.setenv("METERING_MAX_EVENT_BYTES", str(16 * 1024))
    code, out, err = run(capsys, "--db", sqlite_url, "batch", "import", str(first), str(second), "--batch-id", BATCH_ID,
                         "--deployment", "gpt-4o-batch")
    assert code == 0, err
    assert "6 request(s) billed, 0 failed" in out
    # a bad bound is one line too
    code, _, err = run(capsys, "--db", sqlite_url, "batch", "import", str(first), "--batch-id", BATCH_ID,
                       "--max-line-bytes", "0")
    assert code == 2 and "--max-line-bytes must be a positive number of bytes" in err


def test_an_embeddings_job_with_megabyte_lines_is_metered(sqlite_url, tmp_path, capsys):
    """An embeddings response of 300 inputs × 1,536 dimensions is a 3 MB line: above the event bound
    (1 MiB), a normal line of an embeddings batch. Its usage is metered."""
    engine = make_engine(sqlite_url)
    upgrade(engine)
    with engine.begin() as conn:
        rate_card_store.replace_rates(conn, parse_rates_csv(
            "model,deployment_type,region,effective_from,effective_to,currency,input_per_1m,cached_input_per_1m,"
            "output_per_1m\ntext-embedding-3-small,global-batch,,2024-01-25,,USD,0.01,,0\n"))
        rate_card_store.replace_deployments(conn, parse_deployments_csv(
            "backend_id,deployment,model,deployment_type\n,embed-batch,text-embedding-3-small,global-batch\n"))
    engine.dispose()
    vector = [round(0.001 * (i % 997) - 0.5, 9) for i in range(1536)]
    lines = []
    for request in range(3):
        body = {"object": "list", "model": "text-embedding-3-small",
                "data": [{"object": "embedding", "index": i, "embedding": vector} for i in range(300)],
                "usage": {"prompt_tokens": 24_000 + request, "total_tokens": 24_000 + request}}
        lines.append(orjson.dumps({"id": f"batch_req_{request}", "custom_id": f"doc-{request}",
                                   "response": {"status_code": 200, "request_id": f"r{request}", "body": body},
                                   "error": None}))
    assert min(map(len, lines)) > 3_000_000  # three times the event bound
    path = tmp_path / "embeddings-output.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    # embeddings responses carry no 'created' time: without the job's creation or --at, nothing dates it
    code, out, err = run(capsys, "--db", sqlite_url, "batch", "import", str(path), "--batch-id", BATCH_ID,
                         "--deployment", "embed-batch")
    assert code == 2 and "give --at DATE" in err and err.count("\n") == 1
    code, out, err = run(capsys, "--db", sqlite_url, "batch", "import", str(path), "--batch-id", BATCH_ID,
                         "--deployment", "embed-batch", "--at", "2026-10-20")
    assert code == 0, err
    assert "3 request(s) billed" in out and "72,003 tokens" in out
    [row] = batch_rows(sqlite_url)
    assert (row.prompt_tokens, row.endpoint, row.total_cost) == (72_003, "embeddings", Decimal(72_003) * Decimal("0.01") / 1_000_000)


def test_a_line_that_is_not_json_is_named_in_its_own_file(sqlite_url, tmp_path, capsys):
    migrated(sqlite_url)
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(b"\n".join(output_line(i) for i in range(4)) + b"\n")
    second.write_bytes(output_line(4) + b"\n" + output_line(5)[:-40] + b"\n")  # cut short
    code, _, err = run(capsys, "--db", sqlite_url, "batch", "import", str(first), str(second), "--batch-id", BATCH_ID)
    assert code == 2 and f"{second} line 2: not JSON" in err


def test_read_batch_output_takes_any_iterable_of_lines():
    lines = (output_line(i, status=200 if i % 10 else 429) for i in range(100))  # a generator, read once
    output = read_batch_output(lines, BATCH_ID, datetime(2026, 10, 2, tzinfo=timezone.utc), deployment="gpt-4o-batch")
    billed = [i for i in range(100) if i % 10]
    assert (output.billed_requests, output.failed_requests) == (90, 10)
    assert output.usage.usage.prompt_tokens == sum(900 + i % 50 for i in billed)
    assert output.usage.usage.completion_tokens == sum(120 + i % 7 for i in billed)
    assert (output.usage.usage.model, output.usage.endpoint) == ("gpt-4o-2024-08-06", "chat.completions")


def test_output_file_lines_streams_with_the_bound(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"a" * 2047 + b"\r\n\n" + b"b" * 2048 + b"\n" + b"c" * 2049 + b"\n")
    lines = output_file_lines(str(path), max_line_bytes=2048)
    assert next(lines) == b"a" * 2047 and next(lines) == b""  # CRLF removed; blank lines kept, for numbering
    assert next(lines) == b"b" * 2048  # exactly the bound
    with pytest.raises(BatchOutputError, match=r"out\.jsonl line 4: 2,049 bytes, above the 2,048-byte bound"):
        next(lines)


def test_a_large_output_file_is_metered_in_flat_memory(sqlite_url, tmp_path, capsys):
    migrated(sqlite_url)
    count = 50_000
    path = tmp_path / "batch_output.jsonl"
    with open(path, "wb") as handle:
        for start in range(0, count, 5_000):
            handle.write(b"".join(output_line(i, status=500 if i % 1000 == 999 else 200) + b"\n"
                                  for i in range(start, start + 5_000)))
    size = path.stat().st_size
    assert size > 20_000_000
    billed = [i for i in range(count) if i % 1000 != 999]
    prompt = sum(900 + i % 50 for i in billed)
    completion = sum(120 + i % 7 for i in billed)
    # migrated, and its modules imported, before measuring: what is measured is the import itself
    code, _, err = run(capsys, "--db", sqlite_url, "batch", "import", str(path), "--batch-id", "batch_warm-up")
    assert code == 0, err
    tracemalloc.start()
    try:
        code, out, err = run(capsys, "--db", sqlite_url, "batch", "import", str(path), "--batch-id", BATCH_ID,
                             "--deployment", "gpt-4o-batch")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 0, err
    assert f"{len(billed):,} request(s) billed, {count - len(billed)} failed" in out
    assert peak < size / 10, f"peak {peak:,} bytes while importing a {size:,}-byte file"
    (job,) = [row for row in batch_rows(sqlite_url) if row.request_id == f"batch:{BATCH_ID}"]
    assert (job.prompt_tokens, job.completion_tokens, job.total_tokens) == (prompt, completion, prompt + completion)
    assert job.total_cost == Decimal(prompt) * Decimal("1.25") / 1_000_000 + Decimal(completion) * 5 / 1_000_000
    assert (job.model, job.deployment_type) == ("gpt-4o-2024-08-06", "global-batch")



# ---------------------------------------------------------------- dating, charging and hostile ids (#25, #26 items 4 and 12)


def test_a_job_the_gateway_did_not_see_created_is_dated_by_its_responses(sqlite_url, tmp_path, capsys):
    migrated(sqlite_url)
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"\n".join(output_line(i) for i in range(3)) + b"\n")
    code, _, err = run(capsys, "--db", sqlite_url, "batch", "import", str(path), "--batch-id", BATCH_ID,
                       "--deployment", "gpt-4o-batch")
    assert code == 0, err
    [row] = batch_rows(sqlite_url)
    moment = row.event_time if row.event_time.tzinfo else row.event_time.replace(tzinfo=timezone.utc)
    assert moment == datetime.fromtimestamp(1792_050_000, timezone.utc)  # not the day of the import
    assert row.subscription_id is None


def test_subscription_charges_a_job_whose_creation_was_not_seen(sqlite_url, tmp_path, capsys):
    migrated(sqlite_url)
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"\n".join(output_line(i) for i in range(3)) + b"\n")
    code, _, err = run(capsys, "--db", sqlite_url, "batch", "import", str(path), "--batch-id", BATCH_ID,
                       "--deployment", "gpt-4o-batch", "--subscription", "sub-claims")
    assert code == 0, err
    [row] = batch_rows(sqlite_url)
    assert row.subscription_id == "sub-claims"


@pytest.mark.parametrize("batch_id", ["batch_\x1b]0;owned\x07", "batch one", "x" * 200, "batch_\n2"])
def test_a_batch_id_with_control_characters_is_refused_escaped(sqlite_url, tmp_path, capsys, batch_id):
    migrated(sqlite_url)
    path = tmp_path / "out.jsonl"
    path.write_bytes(output_line(1) + b"\n")
    code, out, err = run(capsys, "--db", sqlite_url, "batch", "import", str(path), "--batch-id", batch_id)
    assert code == 2 and err.count("\n") == 1 and not any(c in err for c in "\x1b\x07")
    assert batch_rows(sqlite_url) == []


def test_a_huge_embeddings_line_is_read_without_materialising_its_vectors(tmp_path):
    """A 2,048-input embeddings response is a line of hundreds of MB; parsed whole, its floats took
    8.6 times the line. Read without its vectors, the peak stays near the line itself."""
    vector = ",".join(f"{0.001 * (i % 997) - 0.5:.9f}" for i in range(3072))
    data = ",".join(f'{{"object":"embedding","index":{i},"embedding":[{vector}]}}' for i in range(300))
    line = (b'{"id":"batch_req_1","custom_id":"doc-1","response":{"status_code":200,"request_id":"r1","body":'
            b'{"object":"list","data":[' + data.encode() + b'],"model":"text-embedding-3-large",'
            b'"usage":{"prompt_tokens":24000,"total_tokens":24000}}},"error":null}')
    assert len(line) > 10_000_000
    tracemalloc.start()
    try:
        output = read_batch_output([line], BATCH_ID, datetime(2026, 10, 20, tzinfo=timezone.utc))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert output.usage.usage.prompt_tokens == 24_000 and output.billed_requests == 1
    assert peak < len(line), f"peak {peak:,} bytes for a {len(line):,}-byte line"
