// Private networking: one VNet with a subnet for private endpoints, one for the Function App's
// outbound traffic (Flex Consumption: delegated to Microsoft.App/environments) and one for API
// Management's outbound VNet integration (Standard v2: delegated to Microsoft.Web/serverFarms),
// and the private DNS zones of every private endpoint, linked to the VNet. An APIM in another VNet
// gets the same zones through `linkedVnetIds` (and a peering, which this file does not create).

param location string
param vnetName string
param addressPrefix string = '10.60.0.0/16'
param privateEndpointSubnetPrefix string = '10.60.1.0/24'
param functionSubnetPrefix string = '10.60.2.0/24'
param apimSubnetPrefix string = '10.60.3.0/24'

@description('Other VNets (resource ids) to link to the private DNS zones, e.g. a peered VNet of an existing APIM.')
param linkedVnetIds array = []

param tags object = {}

var zoneNames = [
  'privatelink.blob.${environment().suffixes.storage}'
  'privatelink.queue.${environment().suffixes.storage}'
  'privatelink.table.${environment().suffixes.storage}'
  'privatelink.servicebus.windows.net'
  'privatelink.vaultcore.azure.net'
  'privatelink${environment().suffixes.sqlServerHostname}'
]

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: vnetName
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [addressPrefix]
    }
    subnets: [
      {
        name: 'snet-pe'
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
      {
        name: 'snet-func'
        properties: {
          addressPrefix: functionSubnetPrefix
          delegations: [
            {
              name: 'flex'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: 'snet-apim'
        properties: {
          addressPrefix: apimSubnetPrefix
          delegations: [
            {
              name: 'apim'
              properties: {
                serviceName: 'Microsoft.Web/serverFarms'
              }
            }
          ]
        }
      }
    ]
  }
}

resource zones 'Microsoft.Network/privateDnsZones@2024-06-01' = [for zone in zoneNames: {
  name: zone
  location: 'global'
  tags: tags
}]

resource links 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [for (zone, i) in zoneNames: {
  parent: zones[i]
  name: 'link-${vnetName}'
  location: 'global'
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}]

module peerLinks 'dns-links.bicep' = [for (other, i) in linkedVnetIds: {
  name: 'dns-links-${i}'
  params: {
    zoneNames: zoneNames
    vnetId: other
  }
  dependsOn: [zones]
}]

output vnetId string = vnet.id
output privateEndpointSubnetId string = '${vnet.id}/subnets/snet-pe'
output functionSubnetId string = '${vnet.id}/subnets/snet-func'
output apimSubnetId string = '${vnet.id}/subnets/snet-apim'
output blobZoneId string = zones[0].id
output queueZoneId string = zones[1].id
output tableZoneId string = zones[2].id
output serviceBusZoneId string = zones[3].id
output vaultZoneId string = zones[4].id
output sqlZoneId string = zones[5].id
