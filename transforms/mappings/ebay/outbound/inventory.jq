# Canonical stock level (one snapshot item) -> eBay Sell Inventory bulkUpdatePriceQuantity
# (POST /sell/inventory/v1/bulk_update_price_quantity), one request for the one SKU: the
# ship-to-home quantity of its inventory item (offers are left alone).
#
# Input: {"document": <canonical inventory_adjustment with one item>, "target": {},
#         "listing": {sku?}}.
# Reads the item's sku (listing.sku overrides it), quantities.available (below zero offers 0)
# and sequence (required, as kind snapshot).

outbound_item as $item
| required(.listing.sku // $item.sku; "sku (of the item or the listing)") as $sku
| {
    method: "POST",
    path: "/sell/inventory/v1/bulk_update_price_quantity",
    body: {
      requests: [{sku: $sku, shipToLocationAvailability: {quantity: ($item | sellable)}}]
    }
  }
