"""Reconciliation with the Azure bill: ``bill`` reads Cost Management exports and the backends CSV,
``compare`` sets the bill against the meter per day × resource × meter and explains the difference,
``render`` writes it as table, CSV, JSON, XLSX or HTML."""
