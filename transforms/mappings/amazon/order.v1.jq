# Amazon Selling Partner API, Orders v0 -> canonical order: version 1 of the orders API
# (/v1/channels/{channel}/orders, deprecated). A copy of order.jq, frozen, except its input:
#   {"order": {<getOrder payload>}, "items": [<getOrderItems' OrderItems>]}
# which it merges into the Order with its OrderItems that order.jq (version 2) takes.
#
# Amazon Selling Partner API, Orders v0 -> canonical order.
#
# Input: the `payload` of getOrder (an Order) with the `OrderItems` array of getOrderItems'
# payload added to it. ShippingAddress (getOrderAddress) and BuyerInfo (getOrderBuyerInfo)
# are part of the Order when the connector is allowed to read them:
#   {"AmazonOrderId": "902-...", "OrderStatus": "Unshipped", ..., "OrderItems": [{...}]}
#
# Amazon money is {CurrencyCode, Amount: "10.00"}; ItemPrice is the price of the whole line
# (unit price x quantity), so it is the canonical subtotal and no unit price is invented.

def amazon_money: .CurrencyCode as $c | .Amount | money($c);

def in_currency($c):
  if .CurrencyCode == $c then .
  else reject("an amount in \(.CurrencyCode) on an order in \($c)")
  end;

# The exact sum of Money fields f over all items, in the order's currency.
def items_sum(f; $c): [.OrderItems[] | f | values | in_currency($c) | .Amount] | decimal_sum | money($c);

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

# v0 has no item status: it follows from the order status and the quantities shipped.
def line_status($order):
  if $order == "cancelled" then "cancelled"
  elif (.QuantityShipped // 0) == 0 then
    if $order == "pending" or $order == "unfulfillable" then $order else "unfulfilled" end
  elif .QuantityShipped >= .QuantityOrdered then "fulfilled"
  else "partially_fulfilled"
  end;

# Marketplace facilitator tax is collected and remitted by Amazon, not the seller.
def remitter: if .TaxCollection.Model == "MarketplaceFacilitator" then "marketplace" else "seller" end;

def line_taxes($c):
  remitter as $by
  | [ (.ItemTax | values | {type: "item", amount: (in_currency($c) | amazon_money), remitted_by: $by}),
      (.ShippingTax | values | {type: "shipping", amount: (in_currency($c) | amazon_money), remitted_by: $by}) ];

def line($order; $c):
  required(.OrderItemId; "OrderItemId of an item") as $item
  | {
      line_id: $item,
      channel_ids: {order_item_id: $item, asin: (.ASIN | blank)} | compact,
      sku: (.SellerSKU | blank),
      title: .Title,
      quantity: {ordered: required(.QuantityOrdered; "QuantityOrdered of item \($item)"), shipped: (.QuantityShipped // 0)},
      status: line_status($order),
      subtotal: (required(.ItemPrice; "ItemPrice of item \($item) (Amazon leaves it out of Pending orders)") | in_currency($c) | amazon_money),
      discount: ([.PromotionDiscount, .ShippingDiscount | values | in_currency($c) | .Amount]
                 | if length == 0 then null else decimal_sum | money($c) end),
      shipping: (.ShippingPrice | maybe(in_currency($c) | amazon_money)),
      taxes: (line_taxes($c) | nonempty)
    }
  | compact;

def address:
  {
    name: .Name,
    company: .CompanyName,
    lines: [.AddressLine1, .AddressLine2, .AddressLine3 | blank | values] | nonempty,
    city: .City,
    district: (.District // .County),
    region: .StateOrRegion,
    postal_code: .PostalCode,
    country: (required(.CountryCode; "CountryCode of the address") | country_alpha2),
    phone: .Phone,
    type: (.AddressType | maybe(ascii_downcase))
  }
  | compact;

(.order + {OrderItems: .items})
| required(.AmazonOrderId; "AmazonOrderId") as $id
| (required(.OrderStatus; "OrderStatus") | order_status) as $status
| if (.OrderItems | type) != "array" or (.OrderItems | length) == 0
  then reject("OrderItems (the getOrderItems payload's items) must list the order's items")
  end
| (.OrderTotal.CurrencyCode // .OrderItems[0].ItemPrice.CurrencyCode
   // reject("no currency: neither OrderTotal nor an ItemPrice")) as $c
| items_sum(.ItemPrice; $c) as $subtotal
| items_sum(.PromotionDiscount, .ShippingDiscount; $c) as $discount
| items_sum(.ShippingPrice; $c) as $shipping
| items_sum(.ItemTax, .ShippingTax; $c) as $tax
| {
    id: "amazon:\($id)",
    document_type: "order",
    model_version: "v1",
    channel: "amazon",
    channel_ids: {
      order_id: $id,
      seller_order_id: (.SellerOrderId | blank),
      marketplace_id: .MarketplaceId,
      replaced_order_id: .ReplacedOrderId
    } | compact,
    created_at: (required(.PurchaseDate; "PurchaseDate") | to_utc),
    updated_at: (.LastUpdateDate | maybe(to_utc)),
    status: $status,
    channel_status: {OrderStatus: .OrderStatus},
    currency: $c,
    buyer: (.BuyerInfo | maybe({name: .BuyerName, email: .BuyerEmail} | compact | nonempty)),
    shipping_address: (.ShippingAddress | maybe(address)),
    fulfillment: {
      by: ({"AFN": "marketplace", "MFN": "merchant"}[.FulfillmentChannel // ""]),
      service_level: .ShipServiceLevel,
      ship_by: (.LatestShipDate | maybe(to_utc)),
      deliver_by: (.LatestDeliveryDate | maybe(to_utc))
    } | compact | nonempty,
    lines: [.OrderItems[] | line($status; $c)],
    totals: {
      subtotal: $subtotal,
      discount: $discount,
      shipping: $shipping,
      tax: $tax,
      # Amazon's own total when it gives one; else what the items add up to.
      total: (.OrderTotal | maybe(in_currency($c) | amazon_money)
              // (decimal_add(decimal_sub($subtotal.amount; $discount.amount); decimal_add($shipping.amount; $tax.amount))
                  # Discounts past what they discount leave no total to compute (a canonical
                  # amount is never negative); found by `gateway check --deep`.
                  | if startswith("-") then reject("the order's discounts (\($discount.amount) \($c)) exceed its items, shipping and tax, and there is no OrderTotal") end
                  | money($c)))
    }
  }
| compact
