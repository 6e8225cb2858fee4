"""Decode: the bytes of one Event Hubs message → a typed ``UsageEvent``, or ``BadEvent`` with a reason.

``event`` reads the ``aoai-usage/1`` contract and the community format; ``salvage`` recovers the
header of an event APIM cut at 200 KB; ``signature`` verifies the optional HMAC; ``redact`` strips
prompt and completion text from bytes kept in quarantine. Pure: no I/O.
"""
