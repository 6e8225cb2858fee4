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


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://admin:hunter2@db.example.net:99999x/metering",  # a port that is not a number
])
def test_a_url_with_a_bad_port_is_a_clear_error(capsys, url):
    code = main(["--db", url, "rates", "list"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("metering: ") and "port" in err and "hunter2" not in err


def test_a_mistyped_sqlite_path_creates_no_folder_and_no_database(tmp_path, capsys):
    missing = tmp_path / "nonexistent" / "deeper"
    for command in (["db", "upgrade"], ["rates", "list"]):
        code = main(["--db", f"sqlite:///{missing / 'x.db'}", *command])
        err = capsys.readouterr().err
        assert code == 2 and len(err.splitlines()) == 1
        assert str(missing) in err and "does not exist" in err
    assert not (tmp_path / "nonexistent").exists()
    # a new database file in a folder that exists is what `db upgrade` is for
    assert main(["--db", f"sqlite:///{tmp_path / 'new.db'}", "db", "upgrade"]) == 0
    assert (tmp_path / "new.db").is_file()


def test_an_unreachable_database_is_one_line_and_exit_2(capsys):
    import socket

    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = main(["--db", f"postgresql+psycopg://admin:hunter2@127.0.0.1:{port}/metering", "rates", "list"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("metering: database error: ") and "hunter2" not in err
