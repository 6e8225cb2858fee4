// Event Hubs: the namespace (local auth off), the hub the APIM logger writes to, the Function's
// consumer group, and optional Capture to Avro blobs in a storage account of its own (the
// long-term record `metering replay` reads), written with the namespace's managed identity.
// Roles: APIM sends, the Function receives, the namespace writes Capture, operators read it.

param location string
param namespaceName string
param hubName string = 'aoai-usage'
param consumerGroupName string = 'metering'

@description('Standard throughput units (1 = 1 MB/s or 1,000 events/s of ingress).')
param capacity int = 1
param partitionCount int = 8
param retentionHours int = 168

@description('Capture every event to Avro blobs (the record to replay or reprice from).')
param enableCapture bool = true
param captureStorageName string
param captureContainerName string = 'aoai-usage-capture'

@description('Principal id of the APIM identity (Azure Event Hubs Data Sender on the hub).')
param apimPrincipalId string

@description('Principal id of the Function App identity (Azure Event Hubs Data Receiver on the hub).')
param functionPrincipalId string

@description('Object id of the operators group (Storage Blob Data Reader on the Capture container); empty for none.')
param operatorsGroupId string = ''

param privateNetworking bool = false
param privateEndpointSubnetId string = ''
param serviceBusZoneId string = ''
param blobZoneId string = ''
param workspaceId string
param tags object = {}

var roles = {
  sender: '2b629674-e913-4c01-ae53-ef4638d8f975'       // Azure Event Hubs Data Sender
  receiver: 'a638d3c7-ab3a-418d-83e6-5f17a39d4fde'     // Azure Event Hubs Data Receiver
  blobContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  blobReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
}

resource namespace 'Microsoft.EventHub/namespaces@2024-01-01' = {
  name: namespaceName
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Standard'
    capacity: capacity
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
    zoneRedundant: true
  }
}

resource captureStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = if (enableCapture) {
  // checkov:skip=CKV_AZURE_35: defaultAction is Deny with privateNetworking (Capture passes as a trusted service); the public demo keeps Allow, shared keys off
  // checkov:skip=CKV_AZURE_206: Standard_ZRS replicates across zones; geo-redundancy is an option for teams that keep Capture as their only record
  // checkov:skip=CKV_AZURE_43: the name is derived in main.bicep as take('stcap' + lower-case letters and digits, 24), valid by construction
  // checkov:skip=CKV_AZURE_44: minimumTlsVersion is TLS1_2; checkov reads no property of a conditional resource (= if (...))
  name: captureStorageName
  location: location
  tags: tags
  sku: {
    name: 'Standard_ZRS'
  }
  kind: 'StorageV2'
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    defaultToOAuthAuthentication: true
    // Capture passes the firewall as a trusted Azure service: public network access stays enabled
    // with a deny-by-default firewall (operators reach it through the private endpoint).
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: privateNetworking ? 'Deny' : 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource captureBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = if (enableCapture) {
  parent: captureStorage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource captureContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = if (enableCapture) {
  parent: captureBlobs
  name: captureContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Capture's identity on its container, before Capture is turned on (the hub depends on it).
resource captureWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (enableCapture) {
  scope: captureContainer
  name: guid(captureContainer.id, namespace.id, roles.blobContributor)
  properties: {
    principalId: namespace.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobContributor)
  }
}

resource captureReaders 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (enableCapture && !empty(operatorsGroupId)) {
  scope: captureContainer
  name: guid(captureContainer.id, operatorsGroupId, roles.blobReader)
  properties: {
    principalId: operatorsGroupId
    principalType: 'Group'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobReader)
  }
}

resource hub 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = {
  parent: namespace
  name: hubName
  properties: {
    partitionCount: partitionCount
    retentionDescription: {
      cleanupPolicy: 'Delete'
      retentionTimeInHours: retentionHours
    }
    captureDescription: enableCapture ? {
      enabled: true
      encoding: 'Avro'
      intervalInSeconds: 300
      sizeLimitInBytes: 314572800
      skipEmptyArchives: true
      destination: {
        name: 'EventHubArchive.AzureBlockBlob'
        identity: {
          type: 'SystemAssigned'
        }
        properties: {
          storageAccountResourceId: captureStorage.id
          blobContainer: captureContainerName
          archiveNameFormat: '{Namespace}/{EventHub}/{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}'
        }
      }
    } : null
  }
  dependsOn: [captureWriter]
}

resource consumerGroup 'Microsoft.EventHub/namespaces/eventhubs/consumergroups@2024-01-01' = {
  parent: hub
  name: consumerGroupName
  properties: {
    userMetadata: 'metering Function (function_app.py)'
  }
}

resource apimSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: hub
  name: guid(hub.id, apimPrincipalId, roles.sender)
  properties: {
    principalId: apimPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.sender)
  }
}

resource functionReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: hub
  name: guid(hub.id, functionPrincipalId, roles.receiver)
  properties: {
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.receiver)
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: namespace
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

module namespaceEndpoint 'private-endpoint.bicep' = if (privateNetworking) {
  name: 'pe-${namespaceName}'
  params: {
    location: location
    name: namespaceName
    subnetId: privateEndpointSubnetId
    resourceId: namespace.id
    groupId: 'namespace'
    zoneId: serviceBusZoneId
    tags: tags
  }
}

module captureEndpoint 'private-endpoint.bicep' = if (privateNetworking && enableCapture) {
  name: 'pe-${captureStorageName}-blob'
  params: {
    location: location
    name: '${captureStorageName}-blob'
    subnetId: privateEndpointSubnetId
    resourceId: enableCapture ? captureStorage.id : ''
    groupId: 'blob'
    zoneId: blobZoneId
    tags: tags
  }
}

output namespaceName string = namespace.name
output namespaceHost string = '${namespace.name}.servicebus.windows.net'
output hubName string = hub.name
output hubId string = hub.id
output consumerGroupName string = consumerGroup.name
output captureStorageName string = enableCapture ? captureStorage.name : ''
output captureContainerName string = enableCapture ? captureContainerName : ''
