# Walmart Marketplace purchase order (Orders API) -> canonical order.
#
# Input: one purchase order as the Orders API returns it, bare or wrapped as {"order": {...}}.
# Written from Walmart's documented shape (see mappings/README.md). The traps handled here:
# - amounts are JSON numbers (`"amount": 9.99`): read as exact decimals, never as floats;
# - orderDate and the shipping estimates are epoch milliseconds;
# - quantities are strings (`"amount": "1"`);
# - the country is ISO alpha-3 (`"USA"`);
# - there is no order status, only statuses per line (and per quantity within a line), which
#   roll up into one.
# Charges are per line (already for the line's whole quantity). Walmart is the marketplace
# facilitator for the sales tax it charges, so it remits that tax.

def in_currency($c):
  if .currency == $c then .
  else reject("an amount in \(.currency) on an order in \($c)")
  end;

def walmart_money($c): in_currency($c) | .amount | money($c);

# Called for every status of every line, so an if chain rather than an object built per call.
def line_status:
  if . == "Created" or . == "Acknowledged" then "unfulfilled"
  elif . == "Shipped" then "fulfilled"
  elif . == "Delivered" then "delivered"
  elif . == "Cancelled" then "cancelled"
  elif . == "Refund" then "refunded"
  else reject("unknown Walmart orderLineStatus \(.)")
  end;

# Units of a line whose Walmart status passes the test f.
def units_in(f):
  [.orderLineStatuses.orderLineStatus // [] | .[] | select(.status | f) | required(.statusQuantity.amount; "statusQuantity of a \(.status) line status") | to_int]
  | add // 0;

def charges_of($type; $c): [.charges.charge // [] | .[] | select(.chargeType == $type) | .chargeAmount | walmart_money($c)];

def line($c):
  (required(.lineNumber; "lineNumber of an order line") | id_string) as $n
  | (required(.orderLineQuantity.amount; "orderLineQuantity of line \($n)") | to_int) as $ordered
  | [.orderLineStatuses.orderLineStatus // [] | .[] | .status] as $statuses
  | if ($statuses | length) == 0 then reject("line \($n) has no orderLineStatus") end
  | charges_of("PRODUCT"; $c) as $product
  | charges_of("SHIPPING"; $c) as $shipping
  | if ($product | length) == 0 then reject("line \($n) has no PRODUCT charge") end
  | {
      line_id: $n,
      sku: .item.sku,
      title: .item.productName,
      quantity: {
        ordered: $ordered,
        shipped: units_in(. == "Shipped" or . == "Delivered"),
        cancelled: units_in(. == "Cancelled")
      },
      status: ([$statuses[] | line_status] | status_rollup),
      channel_status: ($statuses | unique | join(",")),
      subtotal: ($product | money_sum($c)),
      shipping: (if ($shipping | length) > 0 then $shipping | money_sum($c) else null end),
      taxes: ([.charges.charge // [] | .[] | select(.tax != null) | {
        type: (if .chargeType == "SHIPPING" then "shipping" else "item" end),
        title: .tax.taxName,
        amount: (required(.tax.taxAmount; "taxAmount of a \(.chargeType) charge's tax") | walmart_money($c)),
        remitted_by: "marketplace"
      } | compact] | nonempty)
    }
  | compact;

def address($phone):
  {
    name: .name,
    lines: [.address1, .address2 | blank | values] | nonempty,
    city: .city,
    region: .state,
    postal_code: .postalCode,
    country: (required(.country; "country of the postal address") | country_alpha2),
    phone: $phone,
    type: (.addressType | maybe(ascii_downcase))
  }
  | compact;

(if (.order | type) == "object" then .order end)
| (required(.purchaseOrderId; "purchaseOrderId") | id_string) as $po
| [.orderLines.orderLine // [] | .[]] as $lines
| if ($lines | length) == 0 then reject("a purchase order without orderLines") end
| (first($lines[].charges.charge // [] | .[] | .chargeAmount.currency) // reject("no charge gives a currency")) as $c
| [$lines[] | line($c)] as $canonical
| ([$canonical[].subtotal] | money_sum($c)) as $subtotal
| ([$canonical[].shipping | values] | money_sum($c)) as $shipping
| ([$canonical[].taxes // [] | .[].amount] | money_sum($c)) as $tax
| {
    id: "walmart:\($po)",
    document_type: "order",
    model_version: "v1",
    channel: "walmart",
    channel_ids: {
      order_id: $po,
      customer_order_id: (.customerOrderId | maybe(id_string))
    } | compact,
    created_at: (required(.orderDate; "orderDate") | epoch_ms_to_rfc3339),
    status: ([$canonical[].status] | status_rollup),
    # Walmart has no order status: the distinct statuses of its lines stand for it.
    channel_status: {orderLineStatus: ([$lines[].orderLineStatuses.orderLineStatus // [] | .[].status] | unique | join(","))},
    currency: $c,
    buyer: {
      name: .shippingInfo.postalAddress.name,
      email: .customerEmailId,
      phone: .shippingInfo.phone
    } | compact | nonempty,
    shipping_address: (.shippingInfo.postalAddress | maybe(address(.shippingInfo.phone))),
    fulfillment: {
      by: ({"SellerFulfilled": "merchant", "3PLFulfilled": "merchant", "WFSFulfilled": "marketplace"}[.shipNode.type // ""]),
      service_level: .shippingInfo.methodCode,
      ship_by: (.shippingInfo.estimatedShipDate | maybe(epoch_ms_to_rfc3339)),
      deliver_by: (.shippingInfo.estimatedDeliveryDate | maybe(epoch_ms_to_rfc3339))
    } | compact | nonempty,
    lines: $canonical,
    totals: {
      subtotal: $subtotal,
      shipping: $shipping,
      tax: $tax,
      total: (decimal_add(decimal_add($subtotal.amount; $shipping.amount); $tax.amount) | money($c))
    }
  }
| compact
