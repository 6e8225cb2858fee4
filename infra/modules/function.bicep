// The metering Function App on Flex Consumption (Python 3.11, Linux): its user-assigned identity,
// host storage (identity-based, no shared keys), the plan, the app with every setting the code
// reads (function_app.py, metering/settings.py; docs/deployment.md lists them), Key Vault
// references through the identity, and the roles on its host storage and Application Insights.
// Database users and the budget function key are set after the code is deployed (infra/hooks/).

param location string
param appName string
param planName string
param identityName string
param hostStorageName string

param eventHubNamespaceHost string
param eventHubName string
param consumerGroupName string

param sqlServerHost string
param sqlDatabaseName string

param vaultName string

@description('Set METERING_SIGNING_SECRET_PREVIOUS to the secret aoai-metering-hmac-key-previous (while rotating the key).')
param acceptPreviousSigningKey bool = false

@description('Set METERING_BUDGET_WEBHOOK_URL to the secret budget-webhook-url (budget alerts on).')
param useBudgetWebhook bool = false

@allowed(['text', 'teams'])
param budgetWebhookFormat string = 'text'
param budgetCheckSchedule string = '0 */5 * * * *'
param maxEventBytes int = 1048576
param quarantineRetentionDays int = 90
param maximumInstanceCount int = 40

@allowed([2048, 4096])
param instanceMemoryMB int = 2048

param appInsightsName string
param appInsightsConnectionString string

param privateNetworking bool = false
param functionSubnetId string = ''
param privateEndpointSubnetId string = ''
param blobZoneId string = ''
param queueZoneId string = ''
param tableZoneId string = ''
param workspaceId string
param tags object = {}

var roles = {
  blobOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'          // host keys, leases, checkpoints, the package
  tableContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'   // host diagnostic events
  queueContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'   // the host's internal queues
  metricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'   // Application Insights with Entra auth
}
var packageContainer = 'app-package'
var keyVaultReference = '@Microsoft.KeyVault(VaultName=${vaultName};SecretName='

// Created by main.bicep first, so that every role it holds exists before the app starts.
resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: identityName
}

resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: defaultAction is Deny with privateNetworking; the public demo keeps Allow because the Function (no VNet) reaches it, and shared keys are off (Entra only)
  // checkov:skip=CKV_AZURE_206: Standard_ZRS replicates across zones; the host's state (leases, checkpoints, package) is rebuilt by a redeploy, so geo-replication buys nothing
  // checkov:skip=CKV_AZURE_43: the name is derived in main.bicep as take('stfn' + lower-case letters and digits, 24), valid by construction
  name: hostStorageName
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
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
    networkAcls: {
      defaultAction: privateNetworking ? 'Deny' : 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource hostBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: hostStorage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource package 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: hostBlobs
  name: packageContainer
  properties: {
    publicAccess: 'None'
  }
}

resource storageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in [roles.blobOwner, roles.tableContributor, roles.queueContributor]: {
  scope: hostStorage
  name: guid(hostStorage.id, identity.id, role)
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
  }
}]

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource telemetryRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: appInsights
  name: guid(appInsights.id, identity.id, roles.metricsPublisher)
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.metricsPublisher)
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Flex Consumption, demo-sized; zone redundancy is a per-region choice (docs/deployment.md) and the hub holds events while an instance is away
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

// Every setting the code reads (tests/policy/test_deployment_docs.py keeps this list, function_app.py,
// metering/settings.py and docs/deployment.md in step).
var appSettings = {
  AzureWebJobsStorage__accountName: hostStorage.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.properties.clientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
  EVENTHUB_NAME: eventHubName
  EVENTHUB_CONSUMER_GROUP: consumerGroupName
  EVENTHUB_CONNECTION__fullyQualifiedNamespace: eventHubNamespaceHost
  EVENTHUB_CONNECTION__credential: 'managedidentity'
  EVENTHUB_CONNECTION__clientId: identity.properties.clientId
  METERING_DATABASE_URL: 'mssql+pyodbc://${identity.properties.clientId}@${sqlServerHost}/${sqlDatabaseName}?driver=ODBC+Driver+18+for+SQL+Server&Authentication=ActiveDirectoryMsi&Encrypt=yes'
  METERING_SIGNING_SECRET: '${keyVaultReference}aoai-metering-hmac-key)'
  METERING_SIGNING_SECRET_PREVIOUS: acceptPreviousSigningKey ? '${keyVaultReference}aoai-metering-hmac-key-previous)' : ''
  METERING_REQUIRE_SIGNATURE: '1'
  METERING_TRUST_LLM_LOGS: '0'
  METERING_MAX_EVENT_AGE_DAYS: '3660'
  METERING_MAX_EVENT_FUTURE_MINUTES: '1440'
  METERING_MAX_EVENT_BYTES: string(maxEventBytes)
  METERING_QUARANTINE_REDACT: '1'
  METERING_QUARANTINE_RETENTION_DAYS: string(quarantineRetentionDays)
  METERING_RATE_CARD_TTL_SECONDS: '60'
  METERING_BUDGET_WEBHOOK_URL: useBudgetWebhook ? '${keyVaultReference}budget-webhook-url)' : ''
  METERING_BUDGET_WEBHOOK_FORMAT: budgetWebhookFormat
  METERING_BUDGET_CHECK_SCHEDULE: budgetCheckSchedule
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: APIM calls GET /api/budget over the internet with a function key; the Event Hubs trigger needs no inbound access
  // checkov:skip=CKV_AZURE_17: the caller (APIM's send-request) authenticates with the function key from Key Vault, not a client certificate
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales per event load from zero; the hub retains events (7 days) while no instance runs
  // checkov:skip=CKV_AZURE_213: health check is not available on Flex Consumption; failures surface in Application Insights (docs/deployment.md)
  name: appName
  location: location
  tags: union(tags, { 'azd-service-name': 'metering' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identity.id
    virtualNetworkSubnetId: privateNetworking ? functionSubnetId : null
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${hostStorage.properties.primaryEndpoints.blob}${packageContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [for setting in items(appSettings): {
        name: setting.key
        value: setting.value
      }]
    }
  }
  dependsOn: [storageRoles, telemetryRole, package]
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: app
  name: 'to-log-analytics'
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'FunctionAppLogs'
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

module endpoints 'private-endpoint.bicep' = [for service in (privateNetworking ? [
  { groupId: 'blob', zoneId: blobZoneId }
  { groupId: 'queue', zoneId: queueZoneId }
  { groupId: 'table', zoneId: tableZoneId }
] : []): {
  name: 'pe-${hostStorageName}-${service.groupId}'
  params: {
    location: location
    name: '${hostStorageName}-${service.groupId}'
    subnetId: privateEndpointSubnetId
    resourceId: hostStorage.id
    groupId: service.groupId
    zoneId: service.zoneId
    tags: tags
  }
}]

output appName string = app.name
output defaultHostName string = app.properties.defaultHostName
output settingNames array = [for setting in items(appSettings): setting.key]
