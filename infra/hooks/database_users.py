"""Database users of the metering database, made by the post-provision hook as the deployer (an
Entra admin of the server, token from the Azure CLI: METERING_DATABASE_URL with
Authentication=AzureCli). Every statement is safe to repeat.

  * the Function App's user-assigned identity: db_datareader + db_datawriter (rows, quarantine);
  * the operators' Entra group (the metering CLI: imports, reprice, quarantine): the same;
  * the finance readers' Entra group (Power BI): role chargeback_reader, SELECT on the views and
    dimensions only, as docs/powerbi.md grants it.

A user named after an Entra identity is resolved by the server with the deployer's own rights, so
a user (not a service principal) deploying needs no Directory Readers role for the server."""

from __future__ import annotations

import argparse
import re
import sys

import sqlalchemy as sa

from db.engine import make_engine

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@-]{0,127}")
FINANCE_OBJECTS = ("v_usage_daily", "v_chargeback_monthly", "v_true_up_monthly", "v_bill_daily", "subscriptions", "rates")


def quoted(name: str) -> str:
    if not NAME.fullmatch(name):
        raise SystemExit(f"database_users: {name!r} is not an Entra display name this script accepts")
    return "[" + name.replace("]", "]]") + "]"


def user(name: str) -> str:
    return f"IF DATABASE_PRINCIPAL_ID(N'{name}') IS NULL CREATE USER {quoted(name)} FROM EXTERNAL PROVIDER"


def statements(function_identity: str, operators: str, finance_readers: str) -> list[str]:
    """The T-SQL, in order, for the names given (an empty name is skipped)."""
    out: list[str] = []
    for name in (function_identity, operators):
        if name:
            out += [user(name), f"ALTER ROLE db_datareader ADD MEMBER {quoted(name)}",
                    f"ALTER ROLE db_datawriter ADD MEMBER {quoted(name)}"]
    if finance_readers:
        out += [user(finance_readers),
                "IF DATABASE_PRINCIPAL_ID(N'chargeback_reader') IS NULL CREATE ROLE chargeback_reader"]
        out += [f"GRANT SELECT ON dbo.{table} TO chargeback_reader" for table in FINANCE_OBJECTS]
        out.append(f"ALTER ROLE chargeback_reader ADD MEMBER {quoted(finance_readers)}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--function-identity", required=True)
    parser.add_argument("--operators", default="")
    parser.add_argument("--finance-readers", default="")
    args = parser.parse_args(argv)
    engine = make_engine()
    if engine.url.get_backend_name() != "mssql":
        raise SystemExit("database_users: METERING_DATABASE_URL is not an Azure SQL database")
    with engine.begin() as conn:
        for statement in statements(args.function_identity, args.operators, args.finance_readers):
            conn.exec_driver_sql(statement)
    print(f"database users: {', '.join(n for n in (args.function_identity, args.operators, args.finance_readers) if n)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
