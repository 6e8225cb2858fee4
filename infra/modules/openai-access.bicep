// "Cognitive Services OpenAI User" for the APIM identity on one Azure OpenAI account (in its own
// resource group), and what the metering backends CSV needs of it: its ARM id and region.

param accountName string
param principalId string

var openAiUser = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: accountName
}

resource access 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: account
  name: guid(account.id, principalId, openAiUser)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', openAiUser)
  }
}

output resourceId string = account.id
output region string = account.location
output endpoint string = account.properties.endpoint
