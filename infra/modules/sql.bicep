// Azure SQL: a server with Microsoft Entra-only authentication (no SQL logins) and its admin, the
// metering database (serverless General Purpose), auditing to Log Analytics. Database users (the
// Function's identity, operators, Power BI readers) are T-SQL: infra/hooks/postprovision.sh makes
// them with the deployer's Entra token after `metering db upgrade`.

param location string
param serverName string
param databaseName string = 'metering'

@description('Display name of the Entra admin (a group, user or service principal).')
param adminLogin string

@description('Object id of the Entra admin.')
param adminObjectId string

@allowed(['User', 'Group', 'Application'])
param adminPrincipalType string = 'User'

@description('Client IP allowed through the firewall while public (the deployer, for the post-provision hook); empty for none.')
param clientIpAddress string = ''

param privateNetworking bool = false
param privateEndpointSubnetId string = ''
param sqlZoneId string = ''
param workspaceId string
param tags object = {}

resource server 'Microsoft.Sql/servers@2023-08-01' = {
  // checkov:skip=CKV_AZURE_113: publicNetworkAccess is Disabled with privateNetworking; the public demo has Entra-only logins and two firewall rules
  name: serverName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    minimalTlsVersion: '1.2'
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
    administrators: {
      administratorType: 'ActiveDirectory'
      azureADOnlyAuthentication: true
      login: adminLogin
      sid: adminObjectId
      principalType: adminPrincipalType
      tenantId: subscription().tenantId
    }
  }
}

resource database 'Microsoft.Sql/servers/databases@2023-08-01' = {
  // checkov:skip=CKV_AZURE_229: demo-sized serverless database; zone redundancy is a per-region option (docs/deployment.md)
  // checkov:skip=CKV_AZURE_26: alert e-mails belong to Microsoft Defender for SQL (a subscription-wide choice)
  // checkov:skip=CKV_AZURE_27: alert e-mails belong to Microsoft Defender for SQL (a subscription-wide choice)
  parent: server
  name: databaseName
  location: location
  tags: tags
  sku: {
    name: 'GP_S_Gen5'
    tier: 'GeneralPurpose'
    family: 'Gen5'
    capacity: 2
  }
  properties: {
    autoPauseDelay: 60
    minCapacity: json('0.5')
    requestedBackupStorageRedundancy: 'Zone'
    zoneRedundant: false
  }
}

// Public mode only (the demo): Azure services (the Function App) and the deployer's address.
resource azureServices 'Microsoft.Sql/servers/firewallRules@2023-08-01' = if (!privateNetworking) {
  parent: server
  name: 'AllowAllWindowsAzureIps'
  properties: {
    startIpAddress: '0.0.0.0'
    endIpAddress: '0.0.0.0'
  }
}

resource deployer 'Microsoft.Sql/servers/firewallRules@2023-08-01' = if (!privateNetworking && !empty(clientIpAddress)) {
  parent: server
  name: 'deployer'
  properties: {
    startIpAddress: clientIpAddress
    endIpAddress: clientIpAddress
  }
}

resource auditing 'Microsoft.Sql/servers/auditingSettings@2023-08-01' = {
  parent: server
  name: 'default'
  properties: {
    state: 'Enabled'
    isAzureMonitorTargetEnabled: true
    retentionDays: 90
  }
}

// Server audit records reach Log Analytics through the master database's diagnostic setting.
resource master 'Microsoft.Sql/servers/databases@2023-08-01' existing = {
  parent: server
  name: 'master'
}

resource auditDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: master
  name: 'to-log-analytics'
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'SQLSecurityAuditEvents'
        enabled: true
      }
    ]
  }
  dependsOn: [auditing]
}

resource databaseDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: database
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
        category: 'Basic'
        enabled: true
      }
    ]
  }
}

module endpoint 'private-endpoint.bicep' = if (privateNetworking) {
  name: 'pe-${serverName}'
  params: {
    location: location
    name: serverName
    subnetId: privateEndpointSubnetId
    resourceId: server.id
    groupId: 'sqlServer'
    zoneId: sqlZoneId
    tags: tags
  }
}

output serverName string = server.name
output serverHost string = server.properties.fullyQualifiedDomainName
output databaseName string = database.name
