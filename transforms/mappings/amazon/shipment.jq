# Amazon confirmShipment request (Orders v0) -> canonical shipment.
#
# Input: the ConfirmShipmentRequest body with the order id of its path added as
# AmazonOrderId: {"AmazonOrderId": "902-...", "marketplaceId": ..., "packageDetail": {...}}.
# A confirmation says the package was handed to the carrier, hence "shipped".

required(.AmazonOrderId; "AmazonOrderId (the orderId of the request path)") as $order
| required(.packageDetail; "packageDetail") as $p
| (required($p.packageReferenceId; "packageReferenceId") | id_string) as $package
| if (($p.orderItems // []) | length) == 0 then reject("a package without orderItems") end
| {
    id: "amazon:shipment:\($order):\($package)",
    document_type: "shipment",
    model_version: "v1",
    channel: "amazon",
    channel_ids: {
      order_id: $order,
      package_reference_id: $package,
      marketplace_id: .marketplaceId
    } | compact,
    order_id: "amazon:\($order)",
    shipped_at: (required($p.shipDate; "shipDate") | to_utc),
    status: "shipped",
    carrier: {code: $p.carrierCode, name: $p.carrierName} | compact | nonempty,
    service: $p.shippingMethod,
    tracking: ([$p.trackingNumber | blank | values | {number: .}] | nonempty),
    ship_from_location_id: $p.shipFromSupplySourceId,
    lines: [$p.orderItems[] | {
      line_id: required(.orderItemId; "orderItemId"),
      quantity: required(.quantity; "quantity of item \(.orderItemId)")
    }]
  }
| compact
