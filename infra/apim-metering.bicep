// The API Management side of the metering pipeline: the Azure OpenAI API (imported from its
// OpenAPI description), named values, the Event Hubs logger (managed identity), the product with
// its API, the policy fragments and the global, product and API policies loaded from policy/*.xml,
// and optionally the subscriptions. infra/main.bicep deploys it (into the APIM's resource group);
// it can also be deployed alone against an APIM that has the roles below:
//
//   az deployment group create -g <apim group> -f infra/apim-metering.bicep \
//     -p apimName=<apim> eventHubNamespaceHost=<ns>.servicebus.windows.net entraTenantId=<tenant> \
//        hmacKeySecretUri=https://<vault>.vault.azure.net/secrets/aoai-metering-hmac-key
//
// Before: policy/backends.bicep is deployed, and the APIM identity has "Azure Event Hubs Data
// Sender" on the hub and "Key Vault Secrets User" on the secrets (main.bicep does all three).
// Order inside this file: API, named values and logger, then fragments, then policies (a policy
// that names a missing named value, logger or fragment cannot be saved).
//
// The policy files are XML documents with escaped C# (docs/policies.md, "Storage format"), so they
// are deployed with format 'xml'. Fragment id = 'aoai-' + file stem (tests/test_policy.py).

@description('Name of the existing API Management instance (with a system-assigned identity).')
param apimName string

@description('Event Hubs namespace host name, e.g. evhns-aoai-metering.servicebus.windows.net.')
param eventHubNamespaceHost string

@description('The event hub the metering events go to.')
param eventHubName string = 'aoai-usage'

@description('Id of the Azure OpenAI API.')
param apiName string = 'azure-openai'

@description('URL path of the API on the gateway (openai: SDKs call <gateway>/openai/deployments/...).')
param apiPath string = 'openai'

@description('OpenAPI description the API is imported from (Azure OpenAI inference, stable).')
param openApiSpecUrl string = 'https://raw.githubusercontent.com/Azure/azure-rest-api-specs/main/specification/cognitiveservices/data-plane/AzureOpenAI/inference/stable/2024-10-21/inference.json'

@description('Service URL of the API; the policy routes every call to the pool (named value aoai-backend-id) instead.')
param serviceUrl string = 'https://aoai-pool.invalid/openai'

@description('Product that subscriptions are bought for; its policy is policy/product-aoai.xml.')
param productName string = 'ai-standard'

@description('Microsoft Entra tenant whose tokens validate-jwt accepts.')
param entraTenantId string

@description('Versionless Key Vault secret URI of the HMAC key for signed events; empty for unsigned events (named value "none").')
param hmacKeySecretUri string = ''

@description('Named values other than entra-tenant-id and aoai-metering-hmac-key (meanings: policy/named-values.md). Start with capture "usage" and include_usage injection off.')
param namedValues object = {
  'aoai-metering-logger-id': 'aoai-usage-logger'
  'aoai-metering-capture': 'usage'
  'aoai-metering-read-streams': 'true'
  'aoai-metering-inject-include-usage': 'false'
  'aoai-metering-attributes': 'header:x-cost-center,claim:appid,claim:azp=appid,claim:oid'
  'aoai-backend-id': 'aoai-pool'
  'aoai-default-api-version': '2024-10-21'
  'aoai-retry-count': '2'
  'aoai-retry-max-wait-seconds': '10'
  'entra-audience': 'api://aoai-gateway'
  'entra-require-jwt': 'false'
  'aoai-rate-limit-ip-calls': '600'
  'aoai-rate-limit-subscription-calls': '300'
  'aoai-rate-limit-client-calls': '120'
  'aoai-tokens-per-minute': '50000'
  'aoai-token-quota': '20000000'
  'aoai-token-quota-period': 'Monthly'
  'aoai-budget-url': 'none'
  'aoai-budget-cache-seconds': '60'
  'aoai-budget-timeout-seconds': '2'
}

@description('Versionless Key Vault secret URI of the budget Function\'s function key (named value aoai-budget-function-key); empty while budgets are not enforced (aoai-budget-url "none").')
param budgetFunctionKeySecretUri string = ''

@description('The budget endpoint, https://<function app>/api/budget (overrides the named value aoai-budget-url); empty keeps namedValues\' value.')
param budgetUrl string = ''

@description('Subscriptions to create on the product: [{ id: "sub-customer-care-bot", displayName: "Customer care bot" }]. The id is what context.Subscription.Id and the subscriptions CSV use.')
param subscriptions array = []

resource apim 'Microsoft.ApiManagement/service@2024-06-01-preview' existing = {
  name: apimName
}

// The subscription key travels in the api-key header, so Azure OpenAI SDKs use an APIM key unchanged.
resource api 'Microsoft.ApiManagement/service/apis@2024-06-01-preview' = {
  parent: apim
  name: apiName
  properties: {
    displayName: 'Azure OpenAI'
    path: apiPath
    protocols: ['https']
    serviceUrl: serviceUrl
    subscriptionRequired: true
    subscriptionKeyParameterNames: {
      header: 'api-key'
      query: 'api-key'
    }
    format: 'openapi+json-link'
    value: openApiSpecUrl
  }
}

resource plainValues 'Microsoft.ApiManagement/service/namedValues@2024-06-01-preview' = [for item in items(union(namedValues, { 'entra-tenant-id': entraTenantId }, empty(budgetUrl) ? {} : { 'aoai-budget-url': budgetUrl })): {
  parent: apim
  name: item.key
  properties: {
    displayName: item.key
    value: item.value
    secret: false
  }
}]

// Key Vault-backed when a secret URI is given (read with the APIM identity); else the literal "none".
resource hmacKey 'Microsoft.ApiManagement/service/namedValues@2024-06-01-preview' = {
  parent: apim
  name: 'aoai-metering-hmac-key'
  properties: empty(hmacKeySecretUri) ? {
    displayName: 'aoai-metering-hmac-key'
    secret: true
    value: 'none'
  } : {
    displayName: 'aoai-metering-hmac-key'
    secret: true
    keyVault: {
      secretIdentifier: hmacKeySecretUri
    }
  }
}

// The budget Function's key for the aoai-budget fragment: Key Vault-backed when a secret URI is given.
resource budgetFunctionKey 'Microsoft.ApiManagement/service/namedValues@2024-06-01-preview' = {
  parent: apim
  name: 'aoai-budget-function-key'
  properties: empty(budgetFunctionKeySecretUri) ? {
    displayName: 'aoai-budget-function-key'
    secret: true
    value: 'none'
  } : {
    displayName: 'aoai-budget-function-key'
    secret: true
    keyVault: {
      secretIdentifier: budgetFunctionKeySecretUri
    }
  }
}

resource logger 'Microsoft.ApiManagement/service/loggers@2024-06-01-preview' = {
  parent: apim
  name: namedValues['aoai-metering-logger-id']
  properties: {
    loggerType: 'azureEventHub'
    description: 'aoai-usage/1 metering events (docs/policies.md)'
    credentials: {
      endpointAddress: eventHubNamespaceHost
      identityClientId: 'SystemAssigned'
      name: eventHubName
    }
  }
}

resource product 'Microsoft.ApiManagement/service/products@2024-06-01-preview' = {
  parent: apim
  name: productName
  properties: {
    displayName: productName
    description: 'Azure OpenAI through the gateway, metered per subscription for chargeback.'
    subscriptionRequired: true
    approvalRequired: true
    state: 'published'
  }
}

resource productApi 'Microsoft.ApiManagement/service/products/apis@2024-06-01-preview' = {
  parent: product
  name: apiName
}

resource meteringInbound 'Microsoft.ApiManagement/service/policyFragments@2024-06-01-preview' = {
  parent: apim
  name: 'aoai-metering-inbound'
  properties: {
    description: 'Metering: request facts, optional include_usage injection (policy/metering-inbound.xml)'
    format: 'xml'
    value: loadTextContent('../policy/metering-inbound.xml')
  }
  dependsOn: [plainValues]
}

resource metering 'Microsoft.ApiManagement/service/policyFragments@2024-06-01-preview' = {
  parent: apim
  name: 'aoai-metering'
  properties: {
    description: 'Metering: the aoai-usage/1 event to Event Hubs (policy/metering.xml)'
    format: 'xml'
    value: loadTextContent('../policy/metering.xml')
  }
  dependsOn: [plainValues, hmacKey, logger]
}

resource budget 'Microsoft.ApiManagement/service/policyFragments@2024-06-01-preview' = {
  parent: apim
  name: 'aoai-budget'
  properties: {
    description: 'Budgets: refuse a blocked subscription with 429, fail open (policy/budget.xml)'
    format: 'xml'
    value: loadTextContent('../policy/budget.xml')
  }
  dependsOn: [plainValues, budgetFunctionKey]
}

resource budgetHeader 'Microsoft.ApiManagement/service/policyFragments@2024-06-01-preview' = {
  parent: apim
  name: 'aoai-budget-header'
  properties: {
    description: 'Budgets: x-budget-status on the response (policy/budget-header.xml)'
    format: 'xml'
    value: loadTextContent('../policy/budget-header.xml')
  }
  dependsOn: [plainValues]
}

resource globalPolicy 'Microsoft.ApiManagement/service/policies@2024-06-01-preview' = {
  parent: apim
  name: 'policy'
  properties: {
    format: 'xml'
    value: loadTextContent('../policy/global.xml')
  }
  dependsOn: [plainValues]
}

resource productPolicy 'Microsoft.ApiManagement/service/products/policies@2024-06-01-preview' = {
  parent: product
  name: 'policy'
  properties: {
    format: 'xml'
    value: loadTextContent('../policy/product-aoai.xml')
  }
  dependsOn: [plainValues, globalPolicy, budget, budgetHeader]
}

resource apiPolicy 'Microsoft.ApiManagement/service/apis/policies@2024-06-01-preview' = {
  parent: api
  name: 'policy'
  properties: {
    format: 'xml'
    value: loadTextContent('../policy/api-aoai.xml')
  }
  dependsOn: [plainValues, meteringInbound, metering, productPolicy]
}

// One subscription per team that is charged back; its id is the chargeback key.
resource teamSubscriptions 'Microsoft.ApiManagement/service/subscriptions@2024-06-01-preview' = [for s in subscriptions: {
  parent: apim
  name: s.id
  properties: {
    displayName: s.displayName
    scope: '/products/${productName}'
    state: 'active'
  }
  dependsOn: [apiPolicy]
}]

output subscriptionIds array = [for (s, i) in subscriptions: teamSubscriptions[i].name]
