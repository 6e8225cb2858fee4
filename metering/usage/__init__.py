"""Usage: a decoded ``UsageEvent`` → ``TokenUsage`` and where the numbers came from (``usage_source``).

``resolve`` applies the precedence (the provider's reported usage, else an estimate); ``sse``
rebuilds a captured Server-Sent Events stream into what the model produced; ``tokens`` counts
with tiktoken from the vendored ``encodings/`` (never downloads). Pure: no I/O beyond reading the
vendored encodings once.
"""
