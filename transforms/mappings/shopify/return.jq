# Shopify refund (refunds/create webhook) -> canonical return.
#
# Input: a Refund, bare or as {"refund": {...}}. Each refund line item gives back units of an
# order line (restocked or not) and the money for them; what actually moved is in the
# transactions of kind "refund". Amounts come from the *_set shop_money strings; the plain
# fields (`"subtotal": 195.66`, a JSON number) are only a fallback and are read exactly too.

def set_money($set; $plain; $c):
  if $set != null then $set.shop_money | .currency_code as $code | .amount | money($code)
  elif $plain != null then $plain | money($c)
  else null
  end;

(if (.refund | type) == "object" then .refund end)
| (required(.id; "id") | id_string) as $id
| (required(.order_id; "order_id") | id_string) as $order
| if ((.refund_line_items // []) | length) == 0 then reject("a refund without refund_line_items") end
| (first(.refund_line_items[].subtotal_set.shop_money.currency_code // empty)
   // first(.transactions[]?.currency // empty)
   // reject("no currency in the refund")) as $c
| [.refund_line_items[] | {
    line_id: (required(.line_item_id; "line_item_id") | id_string),
    channel_ids: {refund_line_item_id: (.id | maybe(id_string))} | compact | nonempty,
    sku: (.line_item.sku | blank),
    quantity: required(.quantity; "quantity of a refund line item"),
    restock: ((.restock_type // "no_restock") != "no_restock"),
    status: .restock_type,
    refund: {
      subtotal: set_money(.subtotal_set; .subtotal; $c),
      tax: set_money(.total_tax_set; .total_tax; $c)
    } | compact
  } | compact] as $lines
| [.transactions // [] | .[] | select(.kind == "refund" and .status == "success")] as $paid
| ([$lines[].refund.subtotal | values] | money_sum($c)) as $subtotal
| ([$lines[].refund.tax | values] | money_sum($c)) as $tax
# A shipping line without an amount (neither the *_set nor the plain one) refunds nothing.
| ([.refund_shipping_lines // [] | .[] | set_money(.subtotal_amount_set; .subtotal_amount; $c) | values] | nonempty
   | maybe(money_sum($c))) as $shipping
| {
    id: "shopify:return:\($id)",
    document_type: "return",
    model_version: "v1",
    channel: "shopify",
    channel_ids: {order_id: $order, refund_id: $id} | compact,
    order_id: "shopify:\($order)",
    created_at: (required(.created_at; "created_at") | to_utc),
    # A refund exists once Shopify processed it; it is refunded when money went back.
    status: (if ($paid | length) > 0 then "refunded" else "approved" end),
    note: (.note | blank),
    currency: $c,
    lines: $lines,
    refund: {
      subtotal: $subtotal,
      tax: $tax,
      shipping: $shipping,
      total: (if ($paid | length) > 0
              then [$paid[] | if .currency == $c then required(.amount; "amount of a refund transaction") else reject("a refund transaction in \(.currency) on a refund in \($c)") end] | decimal_sum | money($c)
              else [$subtotal.amount, $tax.amount, ($shipping.amount // "0")] | decimal_sum | money($c)
              end)
    } | compact
  }
| compact
