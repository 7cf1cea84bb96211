# Walmart Marketplace return order (Returns API) -> canonical return.
#
# Input: one return order, bare or as {"returnOrder": {...}}. Written from Walmart's
# documented shape (see mappings/README.md). Return amounts are {currencyAmount, currencyUnit}
# with currencyAmount a JSON number, negative for money given back: turned around exactly
# (canonical refunds are positive). Charges are per unit and multiplied by the quantity.

def walmart_time: if type == "number" then epoch_ms_to_rfc3339 else to_utc end;

def in_currency($c):
  if .currencyUnit == $c then .
  else reject("an amount in \(.currencyUnit) on a return in \($c)")
  end;

# A refund (negative in Walmart's books) as the positive amount the buyer gets.
def refunded($c): in_currency($c) | .currencyAmount | decimal_neg;

def return_status:
  [.[] | .currentRefundStatus] as $refund
  | [.[] | .currentDeliveryStatus] as $delivery
  | [.[] | .status] as $status
  | if all($status[]; . == "CANCELLED") then "cancelled"
    elif all($refund[]; . == "REFUND_COMPLETED") then "refunded"
    elif any($delivery[]; . == "DELIVERED") then "received"
    elif any($delivery[]; . == "IN_TRANSIT") then "in_transit"
    else "requested"
    end;

def line($c):
  (required(.quantity.measurementValue; "quantity of return line \(.returnOrderLineNumber)") | to_int) as $qty
  | [.charges // [] | .[] | select(.chargeCategory == "PRODUCT")] as $product
  | {
      line_id: (required(.purchaseOrderLineNumber; "purchaseOrderLineNumber") | id_string),
      channel_ids: {return_order_line_number: (.returnOrderLineNumber | maybe(id_string))} | compact | nonempty,
      sku: .item.sku,
      quantity: $qty,
      reason: .returnReason,
      status: .status,
      refund: {
        subtotal: ([$product[] | .chargePerUnit | refunded($c) | decimal_mul(.; $qty)] | decimal_sum | money($c)),
        tax: ([$product[] | .tax // [] | .[] | .taxPerUnit | refunded($c) | decimal_mul(.; $qty)] | decimal_sum | money($c))
      }
    }
  | compact;

(if (.returnOrder | type) == "object" then .returnOrder end)
| (required(.returnOrderId; "returnOrderId") | id_string) as $id
| [.returnOrderLines // [] | .[]] as $lines
| if ($lines | length) == 0 then reject("a return without returnOrderLines") end
| ([$lines[].purchaseOrderId | values | id_string] | unique) as $pos
| if ($pos | length) != 1 then reject("a return must cover exactly one purchase order, not \($pos | length)") end
| (.totalRefundAmount.currencyUnit // first($lines[].unitPrice.currencyUnit // empty)
   // reject("no currency in the return")) as $c
| [$lines[] | line($c)] as $canonical
| {
    id: "walmart:return:\($id)",
    document_type: "return",
    model_version: "v1",
    channel: "walmart",
    channel_ids: {
      order_id: $pos[0],
      return_order_id: $id,
      customer_order_id: (.customerOrderId | maybe(id_string))
    } | compact,
    order_id: "walmart:\($pos[0])",
    created_at: (required(.returnOrderDate; "returnOrderDate") | walmart_time),
    status: ($lines | return_status),
    channel_status: {
      status: ([$lines[].status | values] | unique | join(",")),
      currentRefundStatus: ([$lines[].currentRefundStatus | values] | unique | join(","))
    },
    currency: $c,
    lines: $canonical,
    refund: {
      subtotal: ([$canonical[].refund.subtotal] | money_sum($c)),
      tax: ([$canonical[].refund.tax] | money_sum($c)),
      total: (.totalRefundAmount | maybe(refunded($c) | money($c))
              // ([$canonical[].refund.subtotal.amount, $canonical[].refund.tax.amount] | decimal_sum | money($c)))
    }
  }
| compact
