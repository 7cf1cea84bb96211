# Canonical shipment -> eBay Sell Fulfillment createShippingFulfillment
# (POST /sell/fulfillment/v1/order/{orderId}/shipping_fulfillment).
#
# Input: {"document": <canonical shipment>, "target": {}, "listing": {}}.
# Reads channel_ids.order_id (the eBay orderId), lines[].line_id (lineItemId) and quantity,
# shipped_at (sent in UTC with milliseconds), carrier.code (else carrier.name) as the
# shippingCarrierCode, tracking[0].number (spaces and dashes dropped: eBay takes letters and
# digits only).

.document as $d
| required($d.channel_ids.order_id; "channel_ids.order_id (the eBay orderId)") as $order
| required($d.carrier.code // $d.carrier.name; "carrier (a code or a name)") as $carrier
| required($d.tracking[0].number; "tracking[0].number")
| (split(" ") | join("") | split("-") | join("")) as $tracking
| if ($tracking | test("^[A-Za-z0-9]+$") | not) then
    reject("tracking number \($tracking | tojson) is not letters and digits only, as eBay needs")
  end
| {
    method: "POST",
    path: "/sell/fulfillment/v1/order/\($order | @uri)/shipping_fulfillment",
    body: {
      lineItems: [$d.lines[] | {lineItemId: .line_id, quantity: .quantity}],
      shippedDate: ($d.shipped_at | to_utc_ms),
      shippingCarrierCode: $carrier,
      trackingNumber: $tracking
    }
  }
