"""Sources: events and prices from outside → ``RawEvent`` batches and price-list pages.

``files`` discovers and streams captured JSONL, JSONL.gz and Event Hubs Capture Avro (``capture_avro``
reads the latter with every length bounded; ``bounds`` holds the per-event bound); ``consume`` is the
standalone Event Hubs consumer; ``batch_outputs`` reads Batch API output files;
``retail_fetch`` downloads the Azure Retail Prices API. fastavro and the Azure SDKs are imported
only by the functions that use them.
"""
