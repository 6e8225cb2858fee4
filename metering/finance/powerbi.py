"""The Parquet files the Power BI project reads with its ``Source`` parameter set to ``Parquet``: one
file per table (``<table>.parquet``), each column typed as the model declares it. Money is
``decimal128(28, 12)``, exactly the stored figures (Power BI then keeps four decimals of each row).
Timestamps are UTC written without a zone: Power Query reads a zoned one as ``datetimezone`` and
would turn it into the reader's local time on the way to the model's ``datetime``."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from datetime import timezone
from decimal import Decimal
from typing import Any

SCALE = Decimal("1e-12")


def arrow_type(kind: str) -> Any:
    import pyarrow as pa

    return {"text": pa.string(), "int": pa.int64(), "money": pa.decimal128(28, 12), "date": pa.date32(),
            "timestamp": pa.timestamp("us")}[kind]


def to_parquet(columns: Sequence[tuple[str, str]], rows: Sequence[Mapping[str, Any]], metadata: Mapping[str, str]) -> bytes:
    """One table as Parquet: ``columns`` (name, kind) in order, even when there are no rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = []
    for name, kind in columns:
        values = [row[name] for row in rows]
        if kind == "money":
            values = [None if v is None else v.quantize(SCALE) for v in values]
        elif kind == "timestamp":
            values = [None if v is None else v.astimezone(timezone.utc).replace(tzinfo=None) for v in values]
        arrays.append(pa.array(values, type=arrow_type(kind)))
    schema = pa.schema([pa.field(name, arrow_type(kind)) for name, kind in columns], metadata=dict(metadata))
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), buffer)
    return buffer.getvalue()
