# Amazon ORDER_CHANGE notification -> canonical order change.
#
# Input: the notification as Amazon delivers it (NotificationVersion, NotificationType,
# EventTime, Payload.OrderChangeNotification, NotificationMetadata). It carries statuses and
# quantities but no prices, so it maps to an order change, not an order.

def order_status:
  {
    "Pending": "pending",
    "PendingAvailability": "pending",
    "Unshipped": "unfulfilled",
    "PartiallyShipped": "partially_fulfilled",
    "Shipped": "fulfilled",
    "InvoiceUnconfirmed": "fulfilled",
    "Canceled": "cancelled",
    "Unfulfillable": "unfulfillable"
  }[.] // reject("unknown Amazon OrderStatus \(.)");

def change_type:
  {
    "OrderStatusChange": "status_change",
    "BuyerRequestedChange": "buyer_request",
    "DeliveryTipChange": "tip_change"
  }[.] // "other";

# OrderItemStatus is only Unshipped or Shipped; the quantities tell a partial shipment apart.
def line_status($order):
  if $order == "cancelled" then "cancelled"
  elif .OrderItemStatus == "Shipped" or ((.QuantityShipped // 0) >= .Quantity and .Quantity > 0) then "fulfilled"
  elif (.QuantityShipped // 0) > 0 then "partially_fulfilled"
  elif $order == "pending" then "pending"
  else "unfulfilled"
  end;

if .NotificationType != "ORDER_CHANGE" then reject("not an ORDER_CHANGE notification: \(.NotificationType)") end
| required(.Payload.OrderChangeNotification; "Payload.OrderChangeNotification") as $n
| required($n.AmazonOrderId; "AmazonOrderId") as $id
| ($n.Summary // {}) as $s
| (required($s.OrderStatus; "Summary.OrderStatus") | order_status) as $status
| {
    id: "amazon:order_change:\(required(.NotificationMetadata.NotificationId; "NotificationMetadata.NotificationId"))",
    document_type: "order_change",
    model_version: "v1",
    channel: "amazon",
    channel_ids: {
      order_id: $id,
      notification_id: .NotificationMetadata.NotificationId,
      seller_id: $n.SellerId,
      marketplace_id: $s.MarketplaceId
    } | compact,
    order_id: "amazon:\($id)",
    # When the order changed, not when Amazon got round to notifying.
    occurred_at: ($n.OrderChangeTrigger.TimeOfOrderChange // .EventTime | required(.; "TimeOfOrderChange") | to_utc),
    change_type: ($n.OrderChangeType | change_type),
    channel_change_type: $n.OrderChangeType,
    reason: $n.OrderChangeTrigger.ChangeReason,
    status: $status,
    channel_status: {OrderStatus: $s.OrderStatus},
    fulfillment: {
      by: ({"AFN": "marketplace", "MFN": "merchant"}[$s.FulfillmentType // ""]),
      ship_by: ($s.LatestShipDate | maybe(to_utc)),
      deliver_by: ($s.LatestDeliveryDate | maybe(to_utc))
    } | compact | nonempty,
    lines: ([$s.OrderItems // [] | .[] | {
      line_id: required(.OrderItemId; "OrderItemId"),
      sku: .SellerSKU,
      quantity: ({ordered: .Quantity, shipped: .QuantityShipped} | compact | if has("ordered") then . else null end),
      status: line_status($status),
      channel_status: .OrderItemStatus,
      cancellation_requested: .IsBuyerRequestedCancel
    } | compact] | nonempty)
  }
| compact
