"""Price: ``TokenUsage`` × the effective-dated rate card → exact ``Decimal`` costs.

``pricing`` looks up the rate and computes costs; ``rate_card`` parses and validates the rates CSV;
``retail_prices`` maps Azure Retail Prices pages to rates; ``card_files`` reads either kind of
file; ``mappings`` parses the deployment and subscription CSVs; ``reprice`` recomputes stored rows;
``meters`` holds what the Azure bill charges (bill lines, backends) and ``metered_kinds`` splits a
stored row's cost by the token kinds Azure bills on separate meters. Pure: no I/O.
"""
