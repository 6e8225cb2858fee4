"""Money budgets: ``rules`` (the budgets CSV, spend, forecast, status, anomalies; pure), ``service``
(the same composed with the database: status, alerts due, the gateway's budget endpoint), ``alerts``
(the message a webhook receives), ``webhook`` (posting it), ``render`` (``budgets status`` outputs)."""
