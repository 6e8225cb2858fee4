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
