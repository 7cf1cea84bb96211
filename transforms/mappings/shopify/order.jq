# Shopify Admin REST order (the body of the orders/create webhook) -> canonical order.
#
# Input: the order object itself, or wrapped as {"order": {...}} (REST GET of one order).
# Shopify ids are 64-bit integers and may exceed 2^53: they are turned into strings from
# their own digits. Amounts are strings; the *_set variants give them in the shop's currency
# (shop_money, the canonical amounts) and in the buyer's (presentment_money).

def set_money($set; $plain; $c):
  if $set.shop_money != null then $set.shop_money | .currency_code as $code | .amount | money($code)
  elif $plain != null then $plain | money($c)
  else null
  end;

def presentment($set): $set.presentment_money | maybe(.currency_code as $code | .amount | money($code));

def order_status:
  if .cancelled_at != null then "cancelled"
  elif .financial_status == "refunded" then "refunded"
  else
    {
      "unfulfilled": "unfulfilled",
      "partial": "partially_fulfilled",
      "fulfilled": "fulfilled",
      "restocked": "cancelled"
    }[.fulfillment_status // "unfulfilled"] // reject("unknown Shopify fulfillment_status \(.fulfillment_status)")
  end;

def line_status($order):
  if $order == "cancelled" then "cancelled"
  elif .fulfillment_status == "partial" then "partially_fulfilled"
  elif .fulfillment_status == "fulfilled" then "fulfilled"
  else "unfulfilled"
  end;

def payment_status:
  {
    "pending": "pending",
    "authorized": "authorized",
    "partially_paid": "partially_paid",
    "paid": "paid",
    "partially_refunded": "partially_refunded",
    "refunded": "refunded",
    "voided": "voided",
    "expired": "voided"
  }[. // ""];

# Shopify calls a tax channel-liable when the sales channel (a marketplace) remits it.
def tax($c):
  {
    type: "item",
    title: .title,
    rate: (.rate | maybe(decimal)),
    amount: required(set_money(.price_set; .price; $c); "price of a tax line"),
    remitted_by: (if .channel_liable == true then "marketplace" else "seller" end)
  }
  | compact;

def line($order; $c; $shipped):
  (required(.id; "a line item id") | id_string) as $id
  | required(.quantity; "quantity of line item \($id)") as $qty
  | required(set_money(.price_set; .price; $c); "price of line item \($id)") as $unit
  | {
      line_id: $id,
      channel_ids: {
        line_item_id: $id,
        variant_id: (.variant_id | maybe(id_string)),
        product_id: (.product_id | maybe(id_string))
      } | compact,
      sku: (.sku | blank),
      title: (.name // .title),
      quantity: {ordered: $qty, shipped: ($shipped[$id] // 0)},
      status: line_status($order),
      channel_status: .fulfillment_status,
      unit_price: $unit,
      subtotal: (decimal_mul($unit.amount; $qty) | money($c)),
      discount: ([.discount_allocations // [] | .[] | required(set_money(.amount_set; .amount; $c); "amount of a discount allocation").amount]
                 | if length == 0 then null else decimal_sum | money($c) end),
      taxes: ([.tax_lines // [] | .[] | tax($c)] | nonempty)
    }
  | compact;

def address:
  {
    name: (.name // ([.first_name, .last_name | values] | join(" ")) | blank),
    company: (.company | blank),
    lines: [.address1, .address2 | blank | values] | nonempty,
    city: (.city | blank),
    region: (.province_code // .province | blank),
    postal_code: (.zip | blank),
    country: (required(.country_code; "country_code of the address") | country_alpha2),
    phone: (.phone | blank)
  }
  | compact;

# The order totals in the shop's currency ($which "shop") or the buyer's ("presentment").
# Shopify sends subtotal, tax and total on every order (plain, and as *_set in current API
# versions; legacy orders lack the sets): one missing is refused naming it, as the canonical
# order cannot do without them.
def totals($which; $c):
  def pick($set; $plain): if $which == "shop" then set_money($set; $plain; $c) else presentment($set) end;
  def must($set; $plain; $name):
    pick($set; $plain)
    // reject(if $which == "shop" then "missing \($name)" else "missing \($name)_set.presentment_money (the order was presented in another currency)" end);
  {
    subtotal: must(.total_line_items_price_set; .total_line_items_price; "total_line_items_price"),
    discount: pick(.total_discounts_set; .total_discounts),
    shipping: pick(.total_shipping_price_set; null),
    tax: must(.total_tax_set; .total_tax; "total_tax"),
    total: must(.total_price_set; .total_price; "total_price")
  }
  | compact;

(if (.order | type) == "object" then .order end)
| (required(.id; "id") | id_string) as $id
| required(.currency; "currency") as $c
| order_status as $status
| if ((.line_items // []) | length) == 0 then reject("an order without line_items") end
# Units shipped per line, from the fulfillments that succeeded.
| (reduce (.fulfillments // [] | .[] | select(.status == "success") | .line_items[]?) as $l
     ({}; .[$l.id | id_string] += $l.quantity)) as $shipped
| {
    id: "shopify:\($id)",
    document_type: "order",
    model_version: "v1",
    channel: "shopify",
    channel_ids: {
      order_id: $id,
      name: (.name | blank),
      order_number: (.order_number | maybe(id_string)),
      graphql_id: .admin_graphql_api_id
    } | compact,
    created_at: (required(.created_at; "created_at") | to_utc),
    updated_at: (.updated_at | maybe(to_utc)),
    status: $status,
    channel_status: {
      financial_status: .financial_status,
      fulfillment_status: .fulfillment_status,
      cancelled_at: .cancelled_at
    },
    payment_status: (.financial_status | payment_status),
    currency: $c,
    prices_include_tax: .taxes_included,
    buyer: {
      name: (.customer | maybe([.first_name, .last_name | values] | join(" ") | blank)),
      email: ((.email // .contact_email) | blank),
      phone: (.phone // .customer.phone | blank),
      channel_ids: (.customer.id | maybe({customer_id: id_string}))
    } | compact | nonempty,
    shipping_address: (.shipping_address | maybe(address)),
    billing_address: (.billing_address | maybe(address)),
    fulfillment: {
      by: "merchant",
      service_level: (.shipping_lines[0]?.title)
    } | compact,
    lines: [.line_items[] | line($status; $c; $shipped)],
    totals: totals("shop"; $c),
    presentment_totals: (
      if .presentment_currency != null and .presentment_currency != $c
      then totals("presentment"; $c)
      else null
      end
    )
  }
| compact
