// The API Management instance: a new one (Standard v2, system-assigned identity, outbound VNet
// integration when the pipeline is private), or an existing one in any resource group (deploy
// this module into that group), whose identity the metering roles are granted to.

param create bool
param name string
param location string = resourceGroup().location

@allowed(['StandardV2', 'BasicV2', 'PremiumV2'])
param sku string = 'StandardV2'
param publisherEmail string = ''
param publisherName string = ''

@description('Subnet for outbound VNet integration (delegated to Microsoft.Web/serverFarms); empty for none.')
param subnetId string = ''
param workspaceId string = ''
param tags object = {}

resource created 'Microsoft.ApiManagement/service@2024-05-01' = if (create) {
  // checkov:skip=CKV_AZURE_107: outbound VNet integration is set with privateNetworking; the public demo has none
  // checkov:skip=CKV_AZURE_174: the gateway serves callers on the internet by design (subscription keys, Entra tokens, rate limits)
  name: name
  location: location
  tags: tags
  sku: {
    name: sku
    capacity: 1
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    publisherEmail: publisherEmail
    publisherName: publisherName
    virtualNetworkType: empty(subnetId) ? 'None' : 'External'
    virtualNetworkConfiguration: empty(subnetId) ? null : {
      subnetResourceId: subnetId
    }
  }
}

resource found 'Microsoft.ApiManagement/service@2024-05-01' existing = if (!create) {
  name: name
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (create && !empty(workspaceId)) {
  scope: created
  name: 'to-log-analytics'
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output principalId string = create ? created.identity.principalId : found.identity.principalId
output gatewayUrl string = create ? created.properties.gatewayUrl : found.properties.gatewayUrl
output name string = name
