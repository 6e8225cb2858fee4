// The whole metering stack in one resource group (docs/deployment.md):
//   Log Analytics + Application Insights, Event Hubs (hub, consumer group, Capture), Key Vault with
//   the signing and budget keys, Azure SQL (Entra-only), the Function App (Flex Consumption,
//   Python 3.11) with every setting the code reads, API Management (new, or an existing one in any
//   resource group) with its backends, pool, API, named values, logger, fragments and policies,
//   and every role between them. Optional: private networking (VNet, private endpoints, DNS).
//
//   azd up                                          (azure.yaml: provision, deploy, hooks)
//   or: bash infra/hooks/deploy-az.sh <env name>    (the same Bicep and hooks with az only)
//
// Names are derived from environmentName and a hash of the subscription and group, so nothing is
// typed twice: the hooks read every name from this file's outputs.

targetScope = 'resourceGroup'

@minLength(2)
@maxLength(20)
@description('Short name of this deployment (azd environment name), e.g. metering-demo.')
param environmentName string

param location string = resourceGroup().location

@description('Object id of whoever deploys (azd: AZURE_PRINCIPAL_ID): Entra admin of the SQL server unless sqlAdmin* are given.')
param deployerPrincipalId string

@allowed(['User', 'ServicePrincipal'])
param deployerPrincipalType string = 'User'

@description('Entra admin of the SQL server: object id (default: the deployer), display name and type.')
param sqlAdminObjectId string = deployerPrincipalId
param sqlAdminLogin string = 'metering-deployer'

@allowed(['User', 'Group', 'Application'])
param sqlAdminPrincipalType string = deployerPrincipalType == 'User' ? 'User' : 'Application'

@description('Client IP the SQL firewall admits while public (the post-provision hook runs from it); empty for none.')
param sqlClientIpAddress string = ''

@description('Entra group of the operators who run the metering CLI: object id (Capture reader) and name (database user); empty for none.')
param operatorsGroupId string = ''
param operatorsGroupName string = ''

@description('Entra group that reads the chargeback views in Power BI (docs/powerbi.md: [finance-reporting], role chargeback_reader); empty for none.')
param financeReportingGroupName string = ''

@description('Azure OpenAI accounts behind the gateway, as JSON: [{"name": "aoai-ptu-swedencentral", "resourceGroup": "rg-ai", "priority": 1, "weight": 1}]. name = APIM backend id = backend_id in the metering mappings.')
param openAiBackendsJson string = '[]'

@description('Create API Management (true) or use an existing instance (false: apimName and apimResourceGroup).')
param createApim bool = true
param apimName string = ''
@description('Resource group of the APIM instance; empty: this deployment\'s group.')
param apimResourceGroup string = ''

@allowed(['StandardV2', 'BasicV2', 'PremiumV2'])
param apimSku string = 'StandardV2'
param apimPublisherEmail string = 'platform@example.com'
param apimPublisherName string = 'Platform team'

@description('Private endpoints for storage, Event Hubs, Key Vault and SQL, public access off, VNet integration for the Function and a new APIM.')
param privateNetworking bool = false

@description('With privateNetworking: other VNets (resource ids) to link to the private DNS zones, e.g. the peered VNet of an existing APIM.')
param linkedVnetIds array = []

param enableCapture bool = true

@secure()
@description('Event-signing key, written to Key Vault when given (the hooks generate it once and keep it); empty keeps the stored one.')
param signingKey string = ''

@secure()
@description('While rotating the signing key: the key being replaced (still accepted by the Function); empty keeps the stored one.')
param previousSigningKey string = ''

@description('Whether the Function accepts the previous signing key (docs/deployment.md, rotating the keys).')
param acceptPreviousSigningKey bool = !empty(previousSigningKey)

@secure()
@description('The budget_status function key APIM sends, written to Key Vault when given; empty keeps the stored one.')
param budgetFunctionKey string = ''

@secure()
@description('Webhook for budget alerts (Teams Workflows, Slack, generic); empty keeps the stored one.')
param budgetWebhookUrl string = ''

@description('Whether budget alerts are posted (the secret budget-webhook-url exists or is given now).')
param useBudgetWebhook bool = !empty(budgetWebhookUrl)

@allowed(['text', 'teams'])
param budgetWebhookFormat string = 'text'

@description('Microsoft Entra tenant whose tokens the gateway accepts (validate-jwt).')
param entraTenantId string = tenant().tenantId

param tags object = {}

var suffix = take(uniqueString(subscription().id, resourceGroup().id, environmentName), 6)
var compact = toLower(replace(environmentName, '-', ''))
var names = {
  workspace: 'log-${environmentName}-${suffix}'
  appInsights: 'appi-${environmentName}-${suffix}'
  vnet: 'vnet-${environmentName}-${suffix}'
  namespace: 'evhns-${environmentName}-${suffix}'
  captureStorage: take('stcap${compact}${suffix}', 24)
  hostStorage: take('stfn${compact}${suffix}', 24)
  vault: take('kv-${environmentName}-${suffix}', 24)
  sqlServer: 'sql-${environmentName}-${suffix}'
  identity: 'id-func-${environmentName}-${suffix}'
  plan: 'plan-${environmentName}-${suffix}'
  app: 'func-${environmentName}-${suffix}'
  apim: empty(apimName) ? 'apim-${environmentName}-${suffix}' : apimName
}
var allTags = union(tags, { 'azd-env-name': environmentName, workload: 'aoai-metering' })
var openAiBackends = json(empty(openAiBackendsJson) ? '[]' : openAiBackendsJson)
var apimGroup = empty(apimResourceGroup) ? resourceGroup().name : apimResourceGroup

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    workspaceName: names.workspace
    appInsightsName: names.appInsights
    tags: allTags
  }
}

module network 'modules/network.bicep' = if (privateNetworking) {
  name: 'network'
  params: {
    location: location
    vnetName: names.vnet
    linkedVnetIds: linkedVnetIds
    tags: allTags
  }
}

// The Function's identity first: every role it holds exists before the app starts.
resource functionIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: names.identity
  location: location
  tags: allTags
}

module apimService 'modules/apim-service.bicep' = {
  name: 'apim-service'
  scope: resourceGroup(apimGroup)
  params: {
    create: createApim
    name: names.apim
    location: location
    sku: apimSku
    publisherEmail: apimPublisherEmail
    publisherName: apimPublisherName
    subnetId: privateNetworking && createApim ? network.outputs.apimSubnetId : ''
    workspaceId: monitoring.outputs.workspaceId
    tags: allTags
  }
}

module eventHubs 'modules/eventhubs.bicep' = {
  name: 'eventhubs'
  params: {
    location: location
    namespaceName: names.namespace
    enableCapture: enableCapture
    captureStorageName: names.captureStorage
    apimPrincipalId: apimService.outputs.principalId
    functionPrincipalId: functionIdentity.properties.principalId
    operatorsGroupId: operatorsGroupId
    privateNetworking: privateNetworking
    privateEndpointSubnetId: privateNetworking ? network.outputs.privateEndpointSubnetId : ''
    serviceBusZoneId: privateNetworking ? network.outputs.serviceBusZoneId : ''
    blobZoneId: privateNetworking ? network.outputs.blobZoneId : ''
    workspaceId: monitoring.outputs.workspaceId
    tags: allTags
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    location: location
    vaultName: names.vault
    signingKey: signingKey
    previousSigningKey: previousSigningKey
    acceptPreviousSigningKey: acceptPreviousSigningKey
    budgetFunctionKey: budgetFunctionKey
    budgetWebhookUrl: budgetWebhookUrl
    useBudgetWebhook: useBudgetWebhook
    apimPrincipalId: apimService.outputs.principalId
    functionPrincipalId: functionIdentity.properties.principalId
    privateNetworking: privateNetworking
    privateEndpointSubnetId: privateNetworking ? network.outputs.privateEndpointSubnetId : ''
    vaultZoneId: privateNetworking ? network.outputs.vaultZoneId : ''
    workspaceId: monitoring.outputs.workspaceId
    tags: allTags
  }
}

module sql 'modules/sql.bicep' = {
  name: 'sql'
  params: {
    location: location
    serverName: names.sqlServer
    adminLogin: sqlAdminLogin
    adminObjectId: sqlAdminObjectId
    adminPrincipalType: sqlAdminPrincipalType
    clientIpAddress: sqlClientIpAddress
    privateNetworking: privateNetworking
    privateEndpointSubnetId: privateNetworking ? network.outputs.privateEndpointSubnetId : ''
    sqlZoneId: privateNetworking ? network.outputs.sqlZoneId : ''
    workspaceId: monitoring.outputs.workspaceId
    tags: allTags
  }
}

module function 'modules/function.bicep' = {
  name: 'function'
  params: {
    location: location
    appName: names.app
    planName: names.plan
    identityName: functionIdentity.name
    hostStorageName: names.hostStorage
    eventHubNamespaceHost: eventHubs.outputs.namespaceHost
    eventHubName: eventHubs.outputs.hubName
    consumerGroupName: eventHubs.outputs.consumerGroupName
    sqlServerHost: sql.outputs.serverHost
    sqlDatabaseName: sql.outputs.databaseName
    vaultName: keyVault.outputs.vaultName
    acceptPreviousSigningKey: acceptPreviousSigningKey
    useBudgetWebhook: useBudgetWebhook
    budgetWebhookFormat: budgetWebhookFormat
    appInsightsName: monitoring.outputs.appInsightsName
    appInsightsConnectionString: monitoring.outputs.connectionString
    privateNetworking: privateNetworking
    functionSubnetId: privateNetworking ? network.outputs.functionSubnetId : ''
    privateEndpointSubnetId: privateNetworking ? network.outputs.privateEndpointSubnetId : ''
    blobZoneId: privateNetworking ? network.outputs.blobZoneId : ''
    queueZoneId: privateNetworking ? network.outputs.queueZoneId : ''
    tableZoneId: privateNetworking ? network.outputs.tableZoneId : ''
    workspaceId: monitoring.outputs.workspaceId
    tags: allTags
  }
}

// Each Azure OpenAI account: the APIM identity's role, and its id, region and endpoint.
module openAiAccess 'modules/openai-access.bicep' = [for b in openAiBackends: {
  name: 'openai-${b.name}'
  scope: resourceGroup(contains(b, 'resourceGroup') ? b.resourceGroup : resourceGroup().name)
  params: {
    accountName: b.name
    principalId: apimService.outputs.principalId
  }
}]

module backends '../policy/backends.bicep' = if (!empty(openAiBackends)) {
  name: 'apim-backends'
  scope: resourceGroup(apimGroup)
  params: {
    apimName: apimService.outputs.name
    openAiBackends: [for (b, i) in openAiBackends: {
      name: b.name
      priority: contains(b, 'priority') ? b.priority : 1
      weight: contains(b, 'weight') ? b.weight : 1
      url: '${openAiAccess[i].outputs.endpoint}openai'
    }]
  }
}

module apimMetering 'apim-metering.bicep' = {
  name: 'apim-metering'
  scope: resourceGroup(apimGroup)
  params: {
    apimName: apimService.outputs.name
    eventHubNamespaceHost: eventHubs.outputs.namespaceHost
    eventHubName: eventHubs.outputs.hubName
    entraTenantId: entraTenantId
    hmacKeySecretUri: keyVault.outputs.signingKeySecretUri
    budgetFunctionKeySecretUri: keyVault.outputs.budgetFunctionKeySecretUri
    budgetUrl: 'https://${function.outputs.defaultHostName}/api/budget'
  }
  // The logger and the Key Vault-backed named values need the APIM identity's roles first.
  dependsOn: [eventHubs, keyVault, backends]
}

// For azd (each output becomes an environment value) and infra/hooks/*.sh: no name typed twice.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output METERING_FUNCTION_APP string = function.outputs.appName
output METERING_FUNCTION_IDENTITY string = functionIdentity.name
output METERING_SQL_SERVER string = sql.outputs.serverHost
output METERING_SQL_DATABASE string = sql.outputs.databaseName
output METERING_KEY_VAULT string = keyVault.outputs.vaultName
output METERING_EVENTHUB_NAMESPACE string = eventHubs.outputs.namespaceName
output METERING_EVENTHUB_NAME string = eventHubs.outputs.hubName
output METERING_CAPTURE_STORAGE string = eventHubs.outputs.captureStorageName
output METERING_CAPTURE_CONTAINER string = eventHubs.outputs.captureContainerName
output METERING_APIM_NAME string = apimService.outputs.name
output METERING_APIM_RESOURCE_GROUP string = apimGroup
output METERING_APIM_GATEWAY_URL string = apimService.outputs.gatewayUrl
output METERING_APPINSIGHTS_NAME string = monitoring.outputs.appInsightsName
output METERING_OPERATORS_GROUP string = operatorsGroupName
output METERING_FINANCE_READERS_GROUP string = financeReportingGroupName
output METERING_PRIVATE_NETWORKING bool = privateNetworking
// backend_id,resource_id,region rows for `metering backends import` (the hook writes the CSV).
output METERING_BACKENDS array = [for (b, i) in openAiBackends: {
  backend_id: b.name
  resource_id: openAiAccess[i].outputs.resourceId
  region: openAiAccess[i].outputs.region
}]
output METERING_APP_SETTINGS array = function.outputs.settingNames
