// Azure OpenAI backends for the gateway: one backend per Azure OpenAI resource, each with a
// circuit breaker, and a load-balanced pool over them (docs/policies.md, "Load balancing").
//
//   az deployment group create -g <rg> -f policy/backends.bicep -p apimName=<apim>
//
// Pool semantics (APIM backend pools):
//   * round-robin: every member with the same priority and the same weight;
//   * weighted:    members of one priority share traffic in proportion to their weight;
//   * priority:    lower priority numbers are used first; a higher number only receives traffic
//                  while every member of the lower ones is unavailable (circuit breaker tripped).
// The default below is the usual "provisioned first, pay-as-you-go spillover" layout:
// priority 1 = a PTU deployment, priority 2 = two Standard resources weighted 3:1.
//
// Backend names are the Azure OpenAI resource names on purpose: the metering event's backend.id is
// the first DNS label of the host a request was forwarded to, so it equals the APIM backend id and
// can be mapped in `metering deployments import` (backend_id column), e.g. to price the PTU
// member as 'provisioned' and the spillover members as 'global'.
//
// The gateway's managed identity needs the "Cognitive Services OpenAI User" role on every
// resource (docs/deployment.md); backends carry no keys.

@description('Name of the existing API Management instance.')
param apimName string

@description('Id of the pool backend; the API policy routes to it through the named value aoai-backend-id.')
param poolName string = 'aoai-pool'

@description('Azure OpenAI resources: name (resource name, also the APIM backend id), priority (1 = preferred), weight (share within a priority), optional url (defaults to https://<name>.openai.azure.com/openai).')
param openAiBackends array = [
  { name: 'aoai-ptu-swedencentral', priority: 1, weight: 1 }
  { name: 'aoai-paygo-swedencentral', priority: 2, weight: 3 }
  { name: 'aoai-paygo-francecentral', priority: 2, weight: 1 }
]

@description('Failures (429 or 5xx) within failureInterval that trip a backend.')
param failureCount int = 1

@description('ISO 8601 window in which failures are counted.')
param failureInterval string = 'PT10S'

@description('How long a tripped backend is skipped when the backend sent no Retry-After.')
param tripDuration string = 'PT10S'

resource apim 'Microsoft.ApiManagement/service@2024-06-01-preview' existing = {
  name: apimName
}

resource members 'Microsoft.ApiManagement/service/backends@2024-06-01-preview' = [for b in openAiBackends: {
  parent: apim
  name: b.name
  properties: {
    description: 'Azure OpenAI ${b.name} (priority ${b.priority}, weight ${b.weight})'
    type: 'Single'
    protocol: 'http'
    url: contains(b, 'url') ? b.url : 'https://${b.name}.openai.azure.com/openai'
    tls: {
      validateCertificateChain: true
      validateCertificateName: true
    }
    circuitBreaker: {
      rules: [
        {
          name: 'throttled-or-failing'
          failureCondition: {
            count: failureCount
            interval: failureInterval
            statusCodeRanges: [
              { min: 429, max: 429 }
              { min: 500, max: 599 }
            ]
            errorReasons: [
              'Server errors'
            ]
          }
          tripDuration: tripDuration
          // Trip for as long as the backend's Retry-After says (Azure OpenAI sends it with 429).
          acceptRetryAfter: true
        }
      ]
    }
  }
}]

resource pool 'Microsoft.ApiManagement/service/backends@2024-06-01-preview' = {
  parent: apim
  name: poolName
  properties: {
    description: 'Azure OpenAI pool: priority groups, weighted within a group'
    type: 'Pool'
    pool: {
      services: [for b in openAiBackends: {
        id: '/backends/${b.name}'
        priority: b.priority
        weight: b.weight
      }]
    }
  }
  dependsOn: [
    members
  ]
}

output poolBackendId string = pool.name
output memberBackendIds array = [for b in openAiBackends: b.name]
