# Canonical stock level (one snapshot item) -> Walmart Marketplace update inventory
# (PUT /v3/inventory?sku=...).
#
# Input: {"document": <canonical inventory_adjustment with one item>, "target": {},
#         "listing": {sku?}}.
# Reads the item's sku (listing.sku overrides it), quantities.available (below zero offers 0)
# and sequence (required, as kind snapshot).

outbound_item as $item
| required(.listing.sku // $item.sku; "sku (of the item or the listing)") as $sku
| {
    method: "PUT",
    path: "/v3/inventory?sku=\($sku | @uri)",
    body: {sku: $sku, quantity: {unit: "EACH", amount: ($item | sellable)}}
  }
