# Shopify fulfillment (fulfillments/create and fulfillments/update webhooks) -> canonical
# shipment.
#
# Input: a Fulfillment, bare or as {"fulfillment": {...}}. Its `status` says whether the
# fulfillment went through (success) or not (failure, error, cancelled); `shipment_status`
# follows the carrier once it did.

def shipment_status:
  if .status == "success" then
    {
      "in_transit": "in_transit",
      "out_for_delivery": "in_transit",
      "attempted_delivery": "in_transit",
      "ready_for_pickup": "in_transit",
      "delivered": "delivered",
      "failure": "failed"
    }[.shipment_status // ""] // "shipped"
  else
    {
      "pending": "pending",
      "open": "pending",
      "cancelled": "cancelled",
      "error": "failed",
      "failure": "failed"
    }[.status // ""] // reject("unknown Shopify fulfillment status \(.status)")
  end;

(if (.fulfillment | type) == "object" then .fulfillment end)
| (required(.id; "id") | id_string) as $id
| (required(.order_id; "order_id") | id_string) as $order
| if ((.line_items // []) | length) == 0 then reject("a fulfillment without line_items") end
| [.tracking_numbers // [.tracking_number] | .[] | blank | values] as $numbers
| (.tracking_urls // [.tracking_url]) as $urls
| {
    id: "shopify:shipment:\($order):\($id)",
    document_type: "shipment",
    model_version: "v1",
    channel: "shopify",
    channel_ids: {
      order_id: $order,
      fulfillment_id: $id,
      name: .name
    } | compact,
    order_id: "shopify:\($order)",
    shipped_at: (required(.created_at; "created_at") | to_utc),
    status: shipment_status,
    channel_status: {status: .status, shipment_status: .shipment_status},
    carrier: ({name: (.tracking_company | blank)} | compact | nonempty),
    service: (.service | blank),
    tracking: ([range($numbers | length) as $i
                | {number: $numbers[$i], url: ($urls[$i]? | blank)} | compact] | nonempty),
    ship_from_location_id: (.location_id | maybe(id_string)),
    lines: [.line_items[] | {
      line_id: (required(.id; "line item id") | id_string),
      channel_ids: {variant_id: (.variant_id | maybe(id_string))} | compact | nonempty,
      sku: (.sku | blank),
      quantity: required(.quantity; "quantity of a line item")
    } | compact]
  }
| compact
