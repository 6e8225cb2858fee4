"""APIM diagnostic-setting messages for tests: ``{"records": [...]}`` as a diagnostic setting streams
them to Event Hubs, with ``GatewayLlmLogs`` (token usage) and ``GatewayLogs`` records."""

from __future__ import annotations

from typing import Any

import orjson

from events import v1_event

RESOURCE_ID = ("/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000000/RESOURCEGROUPS/RG-AI"
               "/PROVIDERS/MICROSOFT.APIMANAGEMENT/SERVICE/APIM-CONTOSO-AI")


def llm_record(request_id: str, prompt: int = 1200, completion: int = 300, *, model: str = "gpt-4o-2024-11-20",
               deployment: str = "gpt-4o", time: str = "2026-10-15T09:30:01.5000000Z", cached: int | None = None,
               pascal: bool = False, **extra: Any) -> dict[str, Any]:
    """One ``GatewayLlmLogs`` record. ``pascal``: the Log Analytics column names (``PromptTokens``…)
    at the top level instead of camelCase ``properties``; both shapes must be understood."""
    if pascal:
        record: dict[str, Any] = {
            "TimeGenerated": time, "Category": "GatewayLlmLogs", "CorrelationId": request_id,
            "DeploymentName": deployment, "ModelName": model, "OperationName": "ChatCompletions_Create",
            "ApiVersion": "2024-10-21", "IsStreamCompletion": True, "RequestId": "chatcmpl-AZ1x2y3z",
            "SequenceNumber": 0, "PromptTokens": prompt, "CompletionTokens": completion,
            "TotalTokens": prompt + completion, "Region": "West Europe",
        }
        if cached is not None:
            record["PromptCachedTokens"] = cached
        record.update(extra)
        return record
    properties: dict[str, Any] = {
        "apiVersion": "2024-10-21", "deploymentName": deployment, "modelName": model,
        "isStreamCompletion": True, "requestId": "chatcmpl-AZ1x2y3z", "sequenceNumber": 0,
        "promptTokens": prompt, "completionTokens": completion, "totalTokens": prompt + completion,
        "requestMessages": [{"role": "user", "content": "a secret prompt"}],
        "responseMessages": [{"role": "assistant", "content": "a secret answer"}],
    }
    if cached is not None:
        properties["promptCachedTokens"] = cached
    properties.update(extra)
    return {
        "time": time, "resourceId": RESOURCE_ID, "category": "GatewayLlmLogs",
        "operationName": "Microsoft.ApiManagement/GatewayLlmLogs", "correlationId": request_id,
        "location": "West Europe", "properties": properties,
    }


def gateway_record(request_id: str) -> dict[str, Any]:
    """A ``GatewayLogs`` record for the same request (ignored by the pipeline)."""
    return {
        "time": "2026-10-15T09:30:01.6000000Z", "resourceId": RESOURCE_ID, "category": "GatewayLogs",
        "operationName": "Microsoft.ApiManagement/GatewayLogs", "correlationId": request_id,
        "durationMs": 812, "callerIpAddress": "203.0.113.10", "isRequestSuccess": True,
        "properties": {"method": "POST", "url": "https://apim-contoso-ai.azure-api.net/openai/deployments/gpt-4o/chat/completions",
                       "responseCode": 200, "backendResponseCode": 200, "apiId": "azure-openai",
                       "operationId": "ChatCompletions_Create", "apimSubscriptionId": "sub-finance-analytics"},
    }


def envelope(*records: dict[str, Any]) -> bytes:
    return orjson.dumps({"records": list(records)})


# A pasted document: a realistic prompt of some hundred tokens, which the LLM log's 1,200 prompt
# tokens (system framing, tools, the rest of the conversation) must be plausible next to.
QUARTERLY_REPORT = " ".join(
    f"Line {n}: Azure OpenAI spend for business unit {n % 7} rose by {n * 3 % 17} percent against budget, "
    f"driven by gpt-4o chat traffic from the customer-care bot and batch summarisation jobs."
    for n in range(1, 9)
)


def streamed_request_mode(request_id: str, **overrides) -> dict:
    """A streamed chat completion logged by the metering policy in ``request`` mode: no usage, no
    response, the request attached (so the prompt can be estimated: a ``partial`` row)."""
    return v1_event(
        request_id,
        stream=True,
        capture="request",
        model=None,
        usage=None,
        request={"messages": [{"role": "system", "content": "You are a helpful assistant."},
                              {"role": "user", "content": "Summarise the quarterly cost report in five bullets.\n\n" + QUARTERLY_REPORT}],
                 "stream": True, "max_tokens": 800},
        **overrides,
    )
