"""The Azure SQL URLs in README.md and docs/ connect as written: ``Authentication=ActiveDirectoryMsi``
(the ODBC spelling) must not come with ``Trusted_Connection=Yes``, which the ODBC driver rejects (FA001)."""

from __future__ import annotations

import pytest
from sqlalchemy.dialects.mssql.pyodbc import MSDialect_pyodbc
from sqlalchemy.engine import make_url

from db.engine import odbc_authentication_key

SERVER = "mssql+pyodbc://{user}@sql.example.net/metering?driver=ODBC+Driver+18+for+SQL+Server&{auth}=ActiveDirectoryMsi&Encrypt=yes"


def odbc_string(url: str) -> str:
    args, _ = MSDialect_pyodbc().create_connect_args(odbc_authentication_key(make_url(url)))
    return args[0]


@pytest.mark.parametrize("auth", ["Authentication", "authentication", "AUTHENTICATION"])
def test_managed_identity_url_has_no_integrated_security(auth):
    text = odbc_string(SERVER.format(user="", auth=auth))
    assert "Trusted_Connection" not in text
    assert "Authentication=ActiveDirectoryMsi" in text


def test_user_assigned_identity_keeps_its_client_id():
    text = odbc_string(SERVER.format(user="11111111-2222-3333-4444-555555555555", auth="Authentication"))
    assert "UID=11111111-2222-3333-4444-555555555555" in text and "Trusted_Connection" not in text
    assert "uthentication=ActiveDirectoryMsi" in text


def test_other_urls_are_left_alone():
    for url in ("sqlite:///metering.db", "postgresql+psycopg://u@h/db?Authentication=x"):
        assert odbc_authentication_key(make_url(url)) == make_url(url)


AZ_CLI_URL = "mssql+pyodbc://@sql.example.net/metering?driver=ODBC+Driver+18+for+SQL+Server&Authentication=AzureCli&Encrypt=yes"


def test_azure_cli_url_connects_with_the_cli_token_and_no_integrated_security(tmp_path, monkeypatch):
    """The deployment hook's URL (docs/deployment.md): the signed-in az user's token, packed as the
    ODBC driver's SQL_COPT_SS_ACCESS_TOKEN, and neither Trusted_Connection nor an Authentication
    keyword the driver does not know. (A stand-in `az` prints a token: there is no Azure here.)"""
    import struct
    import types


    from db.engine import SQL_COPT_SS_ACCESS_TOKEN, make_engine

    (tmp_path / "az").write_text("#!/bin/sh\n[ \"$3\" = --resource ] && [ \"$4\" = https://database.windows.net/ ] && echo eyJ0b2tlbg\n")
    (tmp_path / "az").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    # A stand-in for the pyodbc module, holding only what the dialect reads: no driver is loaded.
    pyodbc = types.SimpleNamespace(version="5.1.0", paramstyle="qmark", Error=Exception,
                                   Cursor=type("Cursor", (), {"nextset": None}))
    engine = make_engine(AZ_CLI_URL, module=pyodbc)
    cargs, cparams = engine.dialect.create_connect_args(engine.url)
    cargs = list(cargs)
    engine.dialect.dispatch.do_connect(engine.dialect, None, cargs, cparams)
    assert "Trusted_Connection" not in cargs[0] and "AzureCli" not in cargs[0]
    assert "Encrypt=yes" in cargs[0] and "sql.example.net" in cargs[0]
    raw = "eyJ0b2tlbg".encode("utf-16-le")
    assert cparams["attrs_before"] == {SQL_COPT_SS_ACCESS_TOKEN: struct.pack("<I", len(raw)) + raw}


def test_azure_cli_url_without_a_signed_in_cli_fails_with_one_message(tmp_path, monkeypatch):
    from db.engine import azure_cli_access_token

    (tmp_path / "az").write_text("#!/bin/sh\necho 'Please run az login' >&2\nexit 1\n")
    (tmp_path / "az").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    with pytest.raises(RuntimeError, match="az account get-access-token failed"):
        azure_cli_access_token()
