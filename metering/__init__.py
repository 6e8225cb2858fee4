"""Usage metering and chargeback for Azure OpenAI behind Azure API Management."""

__version__ = "0.1.0"
