// Key Vault (RBAC, purge protection) with the three secrets of the pipeline, written through ARM
// (the control plane: no data-plane role, no wait for one, and it works with public access off):
//   aoai-metering-hmac-key  the event-signing key: APIM signs, the Function verifies
//   budget-function-key     the budget_status function key APIM sends (named value aoai-budget-function-key)
//   budget-webhook-url      optional: where the budget_check timer posts alerts
//   aoai-metering-hmac-key-previous  while rotating: the key being replaced, still accepted
// A secret whose parameter is empty is left as it is: a re-run without the values keeps the keys.

param location string
param vaultName string

@secure()
@description('The HMAC key (base64 text, no " or \\); empty keeps the stored one.')
param signingKey string = ''

@secure()
@description('While rotating: the key being replaced, written as aoai-metering-hmac-key-previous (METERING_SIGNING_SECRET_PREVIOUS); empty keeps the stored one.')
param previousSigningKey string = ''

@description('Whether the Function accepts the previous key (the secret exists or is given now): it is granted it.')
param acceptPreviousSigningKey bool = false

@secure()
@description('The budget_status function key APIM sends; empty keeps the stored one.')
param budgetFunctionKey string = ''

@secure()
@description('The budget alerts webhook URL; empty keeps the stored one (or none).')
param budgetWebhookUrl string = ''

@description('Whether the budget-webhook-url secret exists (or is written now): the Function is granted it.')
param useBudgetWebhook bool = false

param apimPrincipalId string
param functionPrincipalId string

param privateNetworking bool = false
param privateEndpointSubnetId string = ''
param vaultZoneId string = ''
param workspaceId string
param tags object = {}

var secretsUser = '4633458b-17de-408a-b874-0445c86b69e6' // Key Vault Secrets User

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: networkAcls.defaultAction is Deny with privateNetworking; the public demo keeps Allow (RBAC, no access policies)
  name: vaultName
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
    networkAcls: {
      defaultAction: privateNetworking ? 'Deny' : 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource signingSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(signingKey)) {
  // checkov:skip=CKV_AZURE_41: an expired secret would stop the Function or the gateway from reading it; keys are rotated by the documented procedure instead (docs/deployment.md)
  // checkov:skip=CKV_AZURE_114: contentType is set; checkov reads no property of a conditional resource (= if (...))
  parent: vault
  name: 'aoai-metering-hmac-key'
  properties: {
    value: signingKey
    contentType: 'text/plain'
    attributes: {
      enabled: true
    }
  }
}

resource previousSigningSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(previousSigningKey)) {
  // checkov:skip=CKV_AZURE_41: an expired secret would stop the Function or the gateway from reading it; keys are rotated by the documented procedure instead (docs/deployment.md)
  // checkov:skip=CKV_AZURE_114: contentType is set; checkov reads no property of a conditional resource (= if (...))
  parent: vault
  name: 'aoai-metering-hmac-key-previous'
  properties: {
    value: previousSigningKey
    contentType: 'text/plain'
    attributes: {
      enabled: true
    }
  }
}

resource functionKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(budgetFunctionKey)) {
  // checkov:skip=CKV_AZURE_41: an expired secret would stop the Function or the gateway from reading it; keys are rotated by the documented procedure instead (docs/deployment.md)
  // checkov:skip=CKV_AZURE_114: contentType is set; checkov reads no property of a conditional resource (= if (...))
  parent: vault
  name: 'budget-function-key'
  properties: {
    value: budgetFunctionKey
    contentType: 'text/plain'
    attributes: {
      enabled: true
    }
  }
}

resource webhookSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(budgetWebhookUrl)) {
  // checkov:skip=CKV_AZURE_41: an expired secret would stop the Function or the gateway from reading it; keys are rotated by the documented procedure instead (docs/deployment.md)
  // checkov:skip=CKV_AZURE_114: contentType is set; checkov reads no property of a conditional resource (= if (...))
  parent: vault
  name: 'budget-webhook-url'
  properties: {
    value: budgetWebhookUrl
    contentType: 'text/uri-list'
    attributes: {
      enabled: true
    }
  }
}

// Roles on each secret (not on the vault): the scopes exist once the first deployment wrote them.
resource signingRef 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: 'aoai-metering-hmac-key'
}

resource previousSigningRef 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: 'aoai-metering-hmac-key-previous'
}

resource functionKeyRef 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: 'budget-function-key'
}

resource webhookRef 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: 'budget-webhook-url'
}

resource apimReadsSigningKey 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: signingRef
  name: guid(vault.id, 'aoai-metering-hmac-key', apimPrincipalId, secretsUser)
  properties: {
    principalId: apimPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsUser)
  }
  dependsOn: [signingSecret]
}

resource functionReadsSigningKey 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: signingRef
  name: guid(vault.id, 'aoai-metering-hmac-key', functionPrincipalId, secretsUser)
  properties: {
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsUser)
  }
  dependsOn: [signingSecret]
}

resource functionReadsPreviousKey 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (acceptPreviousSigningKey) {
  scope: previousSigningRef
  name: guid(vault.id, 'aoai-metering-hmac-key-previous', functionPrincipalId, secretsUser)
  properties: {
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsUser)
  }
  dependsOn: [previousSigningSecret]
}

resource apimReadsFunctionKey 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: functionKeyRef
  name: guid(vault.id, 'budget-function-key', apimPrincipalId, secretsUser)
  properties: {
    principalId: apimPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsUser)
  }
  dependsOn: [functionKeySecret]
}

resource functionReadsWebhook 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (useBudgetWebhook) {
  scope: webhookRef
  name: guid(vault.id, 'budget-webhook-url', functionPrincipalId, secretsUser)
  properties: {
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsUser)
  }
  dependsOn: [webhookSecret]
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: vault
  name: 'to-log-analytics'
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'audit'
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

module endpoint 'private-endpoint.bicep' = if (privateNetworking) {
  name: 'pe-${vaultName}'
  params: {
    location: location
    name: vaultName
    subnetId: privateEndpointSubnetId
    resourceId: vault.id
    groupId: 'vault'
    zoneId: vaultZoneId
    tags: tags
  }
}

output vaultName string = vault.name
output vaultUri string = vault.properties.vaultUri
output signingKeySecretUri string = '${vault.properties.vaultUri}secrets/aoai-metering-hmac-key'
output budgetFunctionKeySecretUri string = '${vault.properties.vaultUri}secrets/budget-function-key'
