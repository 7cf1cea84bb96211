# Canonical shipment -> Amazon SP-API Orders v0 confirmShipment
# (POST /orders/v0/orders/{orderId}/shipmentConfirmation, body ConfirmShipmentRequest).
#
# Input: {"document": <canonical shipment>, "target": {marketplace_id, ...}, "listing": {}}.
# Reads channel_ids.order_id (the AmazonOrderId), channel_ids.marketplace_id (else
# target.marketplace_id), channel_ids.package_reference_id (else a stable number of the
# shipment's id, so a retried event confirms the same package), carrier.code (else "Other"
# with carrier.name), service, tracking[0].number, shipped_at, lines[].line_id (OrderItemId)
# and lines[].quantity.

.document as $d
| required($d.channel_ids.order_id; "channel_ids.order_id (the Amazon order id)") as $order
| required($d.channel_ids.marketplace_id // (.target.marketplace_id | blank);
    "marketplace_id (in channel_ids or the target)") as $marketplace
| (($d.channel_ids.package_reference_id | maybe(id_string)) // ($d.id | stable_number)) as $package
# Amazon only takes positive numbers as package references.
| ($package | id_number) as $_
| ($d.carrier.code | blank) as $code
| (if $code == null or $code == "Other" then
     required($d.carrier.name | blank; "carrier.name (the carrier has no code)")
   else null end) as $name
| required($d.tracking[0].number; "tracking[0].number") as $tracking
| {
    method: "POST",
    path: "/orders/v0/orders/\($order | @uri)/shipmentConfirmation",
    body: {
      marketplaceId: $marketplace,
      packageDetail: {
        packageReferenceId: $package,
        carrierCode: ($code // "Other"),
        carrierName: $name,
        shippingMethod: $d.service,
        trackingNumber: $tracking,
        shipDate: $d.shipped_at,
        orderItems: [$d.lines[] | {orderItemId: .line_id, quantity: .quantity}]
      } | compact
    }
  }
