# Shopify inventory level (inventory_levels/update webhook, inventory_levels/set) or
# adjustment (inventory_levels/adjust) -> canonical inventory adjustment.
#
# Input: an InventoryLevel, bare or as {"inventory_level": {...}}: with `available` it is a
# snapshot of the units available at a location; with `available_adjustment` it is a delta.
# Shopify identifies the stock by inventory item and location, not by SKU.

(if (.inventory_level | type) == "object" then .inventory_level end)
| (required(.inventory_item_id; "inventory_item_id") | id_string) as $item
| (required(.location_id; "location_id") | id_string) as $location
| (.updated_at | maybe(to_utc)) as $at
| (if .available_adjustment != null then "delta"
   elif .available != null then "snapshot"
   else reject("neither available nor available_adjustment")
   end) as $kind
| {
    # A level is identified by item, location and the time it was set.
    id: ("shopify:inventory:\($item):\($location)" + (if $at then ":\($at)" else "" end)),
    document_type: "inventory_adjustment",
    model_version: "v1",
    channel: "shopify",
    occurred_at: $at,
    items: [{
      channel_ids: {inventory_item_id: $item, location_id: $location},
      location_id: $location,
      fulfilled_by: "merchant",
      kind: $kind,
      quantities: (if $kind == "snapshot" then {available: (.available | to_int)} else null end),
      delta: (if $kind == "delta" then .available_adjustment | to_int else null end),
      as_of: $at
    } | compact]
  }
| compact
