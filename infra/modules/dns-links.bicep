// Links one more VNet (e.g. the peered VNet of an existing APIM) to the private DNS zones.

param zoneNames array
param vnetId string

resource zones 'Microsoft.Network/privateDnsZones@2024-06-01' existing = [for zone in zoneNames: {
  name: zone
}]

resource links 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [for (zone, i) in zoneNames: {
  parent: zones[i]
  name: 'link-${last(split(vnetId, '/'))}'
  location: 'global'
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnetId
    }
  }
}]
