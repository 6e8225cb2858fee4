"""A database URL that cannot be used is bad input: a one-line message and exit status 2, never a
traceback, and never the password it may carry."""

from __future__ import annotations

import pytest

from metering.cli import main


@pytest.mark.parametrize("url", [
    "Server=tcp:sql.example.net;Database=metering;Password=hunter2",  # an ADO.NET string, not a URL
    "nosuchdb://admin:hunter2@db.example.net/metering",  # no such dialect
    "postgresql+nosuchdriver://admin:hunter2@db.example.net/metering",  # no such driver
])
def test_unusable_database_url_is_a_clear_error(capsys, monkeypatch, url):
    code = main(["--db", url, "rates", "list"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("metering: ") and "Traceback" not in err
    assert "database URL" in err
    assert "hunter2" not in err
    monkeypatch.setenv("METERING_DATABASE_URL", url)
    assert main(["report", "--month", "2026-10"]) == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err and "Traceback" not in err


def test_missing_sql_server_driver_names_the_extra_to_install(capsys):
    pytest.importorskip("sqlalchemy.dialects.mssql.pyodbc")
    try:
        import pyodbc  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("pyodbc is installed here")
    code = main(["--db", "mssql+pyodbc://@sql.example.net/metering?driver=ODBC+Driver+18+for+SQL+Server", "rates", "list"])
    err = capsys.readouterr().err
    assert code == 2 and "pyodbc" in err and "aoai-metering[mssql]" in err
