"""SQLite rows are bound by direct functions instead of SQLAlchemy's chains of processors (db/store.py,
``_binders``): they must bind exactly what the dialect's own processors bind, for every value a row
can hold, or a stored instant or cost would differ from the same row written any other way."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from db.engine import make_engine
from db.schema import ExactDecimal, UtcDateTime
from db.store import _RECORD_COLUMNS, _binders


@pytest.fixture(scope="module")
def dialect():
    return make_engine("sqlite://").dialect


def _pairs(dialect, kind):
    fast = _binders(dialect)
    return [(column.name, fast[i], column.type._cached_bind_processor(dialect))
            for i, column in enumerate(_RECORD_COLUMNS) if isinstance(column.type, kind)]


instants = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                        timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=5, minutes=30)),
                                                   timezone(timedelta(hours=-11))]))
decimals = st.decimals(allow_nan=False, allow_infinity=False, places=None) | st.sampled_from(
    [Decimal("0E-12"), Decimal("-0"), Decimal("1E+3"), Decimal("0.000000000001"), Decimal("9999999999999999.999999999999")])


@settings(max_examples=300, deadline=None)
@given(instant=instants)
def test_instants_bind_as_the_dialect_binds_them(dialect, instant):
    pairs = _pairs(dialect, UtcDateTime)
    assert pairs, "usage_records has an instant column"
    for name, fast, slow in pairs:
        assert fast(instant) == slow(instant), name


@settings(max_examples=300, deadline=None)
@given(value=decimals)
def test_costs_bind_as_the_dialect_binds_them(dialect, value):
    pairs = _pairs(dialect, ExactDecimal)
    assert len(pairs) >= 6  # four costs, the unit cost, audio seconds
    for name, fast, slow in pairs:
        assert fast(value) == slow(value), name


def test_none_other_numbers_and_naive_times_go_through_the_dialect(dialect):
    for name, fast, slow in _pairs(dialect, ExactDecimal):
        assert fast(None) is None and fast(3) == slow(3) == "3" and fast(0.5) == slow(0.5), name
    for name, fast, _ in _pairs(dialect, UtcDateTime):
        assert fast(None) is None
        with pytest.raises(ValueError, match="naive"):
            fast(datetime(2026, 10, 1, 12))


def test_booleans_go_as_they_are_and_sqlite_stores_them_as_the_processor_does(dialect):
    fast = _binders(dialect)
    booleans = [i for i, column in enumerate(_RECORD_COLUMNS) if isinstance(column.type, sa.Boolean)]
    assert booleans and all(fast[i] is None for i in booleans)
    with make_engine("sqlite://").connect() as conn:
        process = _RECORD_COLUMNS[booleans[0]].type._cached_bind_processor(conn.dialect)
        stored = conn.exec_driver_sql("SELECT ?, ?, typeof(?), ?", (True, False, True, process(True))).one()
    assert tuple(stored) == (1, 0, "integer", 1)


def test_other_servers_keep_their_own_processors():
    from sqlalchemy.dialects import mssql, postgresql

    for dialect in (postgresql.dialect(), mssql.dialect()):
        assert list(_binders(dialect)) == [column.type._cached_bind_processor(dialect) for column in _RECORD_COLUMNS]
