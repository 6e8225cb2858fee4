"""The chargeback report: ``options`` (what is asked for: period, dimensions, format), ``build`` (stored
rows → the table with totals and data quality), ``render`` (table, CSV, JSON, Parquet) with ``xlsx`` and
``html`` for the richer formats."""
