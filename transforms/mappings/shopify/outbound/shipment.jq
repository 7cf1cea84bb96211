# Canonical shipment -> Shopify Admin REST fulfillment create
# (POST /admin/api/{version}/fulfillments.json).
#
# Input: {"document": <canonical shipment>, "target": {api_version, notify_customer?},
#         "listing": {}}.
# Reads channel_ids.fulfillment_order_id (the fulfillment order, not the order: Shopify
# fulfills fulfillment orders), lines[].channel_ids.fulfillment_order_line_item_id and
# quantity (when every line has one, only those lines are fulfilled; when none has, the whole
# fulfillment order is), tracking[0].number and url, carrier.name (else carrier.code) as the
# tracking company, target.api_version, target.notify_customer ("true" notifies the buyer).
# Ids go as JSON integers with their exact digits.

.document as $d
| .target as $t
| required($t.api_version | blank; "target.api_version") as $version
| (required($d.channel_ids.fulfillment_order_id;
     "channel_ids.fulfillment_order_id (the Shopify fulfillment order)") | id_number) as $order
| [$d.lines[] | .channel_ids.fulfillment_order_line_item_id | values] as $line_ids
| if ($line_ids | length) != 0 and ($line_ids | length) != ($d.lines | length) then
    reject("only some lines carry channel_ids.fulfillment_order_line_item_id: either every line names its fulfillment order line or none does")
  end
| {
    method: "POST",
    path: "/admin/api/\($version | @uri)/fulfillments.json",
    body: {
      fulfillment: {
        line_items_by_fulfillment_order: [{
          fulfillment_order_id: $order,
          fulfillment_order_line_items: (
            if ($line_ids | length) == 0 then null
            else [$d.lines[] | {
              id: (.channel_ids.fulfillment_order_line_item_id | id_number),
              quantity: .quantity
            }] end)
        } | compact],
        tracking_info: ({
          number: $d.tracking[0].number,
          url: $d.tracking[0].url,
          company: ($d.carrier.name // $d.carrier.code)
        } | compact | nonempty),
        notify_customer: ($t.notify_customer == "true")
      } | compact
    }
  }
