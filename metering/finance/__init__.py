"""Finance: stored usage rows → what finance reads, one package per capability.

``report/`` builds the chargeback (options, the table with totals and data quality, and its renderers:
table, CSV, JSON, Parquet, XLSX, HTML); ``reconcile/`` reads the Azure bill and compares it with the
meter; ``budgets/`` judges spend against budgets, serves the gateway's budget endpoint and posts alerts;
``capacity`` allocates provisioned (PTU) cost by token share; ``focus`` maps usage to FinOps FOCUS rows;
``charts`` draws the inline SVG both HTML pages use. pandas, pyarrow and openpyxl are loaded only here,
and only when a report is built.
"""
