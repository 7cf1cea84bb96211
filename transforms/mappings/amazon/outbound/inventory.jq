# Canonical stock level (one snapshot item) -> Amazon SP-API Listings Items 2021-08-01
# patchListingsItem (PATCH /listings/2021-08-01/items/{sellerId}/{sku}?marketplaceIds=...),
# replacing the listing's fulfillment_availability (the seller-fulfilled quantity).
#
# Input: {"document": <canonical inventory_adjustment with one item>,
#         "target": {seller_id, marketplace_id}, "listing": {product_type?, sku?}}.
# Reads the item's sku (listing.sku overrides it), quantities.available (below zero offers 0)
# and sequence (required, as kind snapshot), target.seller_id, target.marketplace_id,
# listing.product_type (default "PRODUCT").

outbound_item as $item
| (.listing // {}) as $listing
| required(.target.seller_id | blank; "target.seller_id") as $seller
| required(.target.marketplace_id | blank; "target.marketplace_id") as $marketplace
| required($listing.sku // $item.sku; "sku (of the item or the listing)") as $sku
| {
    method: "PATCH",
    path: "/listings/2021-08-01/items/\($seller | @uri)/\($sku | @uri)?marketplaceIds=\($marketplace | @uri)",
    body: {
      productType: ($listing.product_type | blank // "PRODUCT"),
      patches: [{
        op: "replace",
        path: "/attributes/fulfillment_availability",
        value: [{fulfillment_channel_code: "DEFAULT", quantity: ($item | sellable)}]
      }]
    }
  }
