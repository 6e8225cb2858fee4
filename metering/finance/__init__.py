"""Finance: stored usage rows → what finance reads.

``options`` is what a report is asked for (period, dimensions, format); ``report`` builds the
chargeback table with totals and data quality; ``render`` writes it as table, CSV, JSON, Parquet,
XLSX (``xlsx_report``) or HTML (``html_report``, ``charts``); ``capacity`` allocates provisioned
(PTU) cost by token share; ``focus`` maps usage to FinOps FOCUS rows. pandas, pyarrow and openpyxl
are loaded only here, and only when a report is built.
"""
