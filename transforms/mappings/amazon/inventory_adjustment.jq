# Amazon FBA Inventory API (getInventorySummaries, details=true) -> canonical inventory
# adjustment.
#
# Input: the getInventorySummaries response ({payload: {granularity, inventorySummaries},
# pagination}). Each summary is a snapshot of the stock Amazon holds for a seller SKU in the
# marketplace named by the granularity; Amazon fulfils it, so it is fulfilled by the
# marketplace. Without details=true Amazon sends no fulfillable quantity, and guessing one from
# totalQuantity (which counts inbound units) would oversell, so such a report is rejected.

def summary:
  required(.sellerSku; "sellerSku of an inventory summary") as $sku
  | (.inventoryDetails // reject("no inventoryDetails for \($sku): request the summaries with details=true")) as $d
  | {
      sku: $sku,
      title: .productName,
      channel_ids: {asin: .asin, fnsku: .fnSku} | compact | nonempty,
      fulfilled_by: "marketplace",
      kind: "snapshot",
      quantities: {
        available: required($d.fulfillableQuantity; "fulfillableQuantity of \($sku)"),
        reserved: $d.reservedQuantity.totalReservedQuantity,
        inbound: ([$d.inboundWorkingQuantity, $d.inboundShippedQuantity, $d.inboundReceivingQuantity | values] | add),
        unfulfillable: $d.unfulfillableQuantity.totalUnfulfillableQuantity,
        total: .totalQuantity
      } | compact,
      # Amazon sends "" for a SKU whose stock never changed.
      as_of: (.lastUpdatedTime | blank | maybe(to_utc))
    }
  | compact;

required(.payload; "payload") as $p
| if (($p.inventorySummaries // []) | length) == 0 then reject("no inventorySummaries") end
| {
    document_type: "inventory_adjustment",
    model_version: "v1",
    channel: "amazon",
    channel_ids: ($p.granularity | if .granularityType == "Marketplace" then {marketplace_id: .granularityId} | compact | nonempty else null end),
    items: [$p.inventorySummaries[] | summary]
  }
| compact
