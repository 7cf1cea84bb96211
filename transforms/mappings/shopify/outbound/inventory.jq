# Canonical stock level (one snapshot item) -> Shopify Admin REST inventory_levels/set
# (POST /admin/api/{version}/inventory_levels/set.json).
#
# Input: {"document": <canonical inventory_adjustment with one item>,
#         "target": {api_version, location_id}, "listing": {inventory_item_id, location_id?}}.
# Reads listing.inventory_item_id (required: Shopify knows items by it, not by SKU),
# listing.location_id (else target.location_id), the item's quantities.available (sent as is:
# Shopify keeps negative levels) and sequence (required, as kind snapshot),
# target.api_version. Ids go as JSON integers with their exact digits.

outbound_item as $item
| (.listing // {}) as $listing
| required(.target.api_version | blank; "target.api_version") as $version
| (required($listing.inventory_item_id;
     "listing.inventory_item_id (the Shopify inventory item of the SKU)") | id_number) as $inventory_item
| (required($listing.location_id // (.target.location_id | blank);
     "location_id (in the listing or the target)") | id_number) as $location
| {
    method: "POST",
    path: "/admin/api/\($version | @uri)/inventory_levels/set.json",
    body: {
      location_id: $location,
      inventory_item_id: $inventory_item,
      available: required($item.quantities.available; "quantities.available")
    }
  }
