# eBay Sell Fulfillment API order (getOrder) -> canonical order.
#
# Input: the Order as getOrder returns it. Written from eBay's documented shape (see
# mappings/README.md). eBay amounts are {value: "10.00", currency} in the seller's currency,
# with convertedFromValue / convertedFromCurrency when the buyer paid in another currency;
# discounts are negative (canonical discounts are positive amounts that reduce). Taxes in
# ebayCollectAndRemitTaxes are remitted by eBay, those in taxes by the seller.

def in_currency($c):
  if .currency == $c then .
  else reject("an amount in \(.currency) on an order in \($c)")
  end;

def ebay_money($c): in_currency($c) | .value | money($c);

# The same amount in the buyer's currency, when eBay converted it.
def buyer_money: if .convertedFromCurrency then .convertedFromCurrency as $b | .convertedFromValue | money($b) else null end;

# A pricingSummary amount in the buyer's currency, on an order whose total eBay converted.
def converted($field): buyer_money // reject("pricingSummary.\($field) was not converted though the total was");

def discount_money($c): in_currency($c) | .value | decimal_abs | money($c);

def fulfillment_status:
  if . == "NOT_STARTED" then "unfulfilled"
  elif . == "IN_PROGRESS" then "partially_fulfilled"
  elif . == "FULFILLED" then "fulfilled"
  else reject("unknown eBay fulfillment status \(.)")
  end;

def payment_status:
  {
    "PENDING": "pending",
    "PAID": "paid",
    "FAILED": "failed",
    "PARTIALLY_REFUNDED": "partially_refunded",
    "FULLY_REFUNDED": "refunded"
  }[. // ""];

def tax($by; $c):
  {type: "item", title: .taxType, amount: (.amount | ebay_money($c)), remitted_by: $by} | compact;

def line($cancelled; $c):
  required(.lineItemId; "lineItemId") as $id
  | required(.quantity; "quantity of line item \($id)") as $qty
  | (required(.lineItemFulfillmentStatus; "lineItemFulfillmentStatus of line item \($id)")) as $wire
  | {
      line_id: $id,
      channel_ids: {
        line_item_id: $id,
        legacy_item_id: .legacyItemId,
        legacy_variation_id: .legacyVariationId
      } | compact,
      sku: (.sku | blank),
      title: .title,
      # eBay says how far a line got, not how many units shipped: only the two ends are certain.
      quantity: {
        ordered: $qty,
        shipped: (if $wire == "FULFILLED" then $qty elif $wire == "NOT_STARTED" then 0 else null end)
      } | compact,
      status: (if $cancelled then "cancelled" else $wire | fulfillment_status end),
      channel_status: $wire,
      subtotal: (required(.lineItemCost; "lineItemCost of line item \($id)") | ebay_money($c)),
      discount: ([.appliedPromotions // [] | .[] | .discountAmount | in_currency($c) | .value | decimal_abs]
                 | if length == 0 then null else decimal_sum | money($c) end),
      shipping: (.deliveryCost.shippingCost | maybe(ebay_money($c))),
      taxes: ([(.taxes // [] | .[] | tax("seller"; $c)),
               (.ebayCollectAndRemitTaxes // [] | .[] | tax("marketplace"; $c))] | nonempty)
    }
  | compact;

def address:
  {
    name: .fullName,
    lines: [.contactAddress.addressLine1, .contactAddress.addressLine2 | blank | values] | nonempty,
    city: (.contactAddress.city | blank),
    region: (.contactAddress.stateOrProvince | blank),
    postal_code: (.contactAddress.postalCode | blank),
    country: (required(.contactAddress.countryCode; "countryCode of the ship-to address") | country_alpha2),
    phone: (.primaryPhone.phoneNumber | blank),
    email: (.email | blank)
  }
  | compact;

required(.orderId; "orderId") as $id
| (required(.pricingSummary.total.currency; "pricingSummary.total")) as $c
| (.cancelStatus.cancelState == "CANCELED") as $cancelled
| if ((.lineItems // []) | length) == 0 then reject("an order without lineItems") end
| .pricingSummary as $p
# Without a shipping step (no fulfillmentStartInstructions, or none with one) the order is
# mapped without a shipping address, which the canonical order does not need.
| (first(.fulfillmentStartInstructions // [] | .[] | select(.shippingStep != null)) // null) as $ship
| {
    id: "ebay:\($id)",
    document_type: "order",
    model_version: "v1",
    channel: "ebay",
    channel_ids: {
      order_id: $id,
      legacy_order_id: .legacyOrderId,
      sales_record_reference: .salesRecordReference,
      seller_id: .sellerId
    } | compact,
    created_at: (required(.creationDate; "creationDate") | to_utc),
    updated_at: (.lastModifiedDate | maybe(to_utc)),
    status: (if $cancelled then "cancelled" else required(.orderFulfillmentStatus; "orderFulfillmentStatus") | fulfillment_status end),
    channel_status: {
      orderFulfillmentStatus: .orderFulfillmentStatus,
      cancelState: .cancelStatus.cancelState,
      orderPaymentStatus: .orderPaymentStatus
    },
    payment_status: (.orderPaymentStatus | payment_status),
    currency: $c,
    buyer: {
      name: .buyer.buyerRegistrationAddress.fullName,
      email: .buyer.buyerRegistrationAddress.email,
      channel_ids: (.buyer.username | maybe({username: .}))
    } | compact | nonempty,
    shipping_address: ($ship.shippingStep.shipTo | maybe(address)),
    fulfillment: {
      by: (if $ship.ebaySupportedFulfillment == true then "marketplace" else "merchant" end),
      service_level: $ship.shippingStep.shippingServiceCode,
      ship_by: (.lineItems[0].lineItemFulfillmentInstructions.shipByDate | maybe(to_utc)),
      deliver_by: ($ship.maxEstimatedDeliveryDate | maybe(to_utc))
    } | compact,
    lines: [.lineItems[] | line($cancelled; $c)],
    totals: {
      subtotal: (required($p.priceSubtotal; "pricingSummary.priceSubtotal") | ebay_money($c)),
      discount: ($p.priceDiscount | maybe(discount_money($c))),
      shipping: ($p.deliveryCost | maybe(ebay_money($c))),
      tax: (if $p.tax then $p.tax | ebay_money($c) else "0" | money($c) end),
      total: ($p.total | ebay_money($c))
    } | compact,
    presentment_totals: (
      if $p.total.convertedFromCurrency then
        $p.total.convertedFromCurrency as $b
        | {
            subtotal: ($p.priceSubtotal | converted("priceSubtotal")),
            discount: ($p.priceDiscount | maybe(converted("priceDiscount") | .amount |= decimal_abs)),
            shipping: ($p.deliveryCost | maybe(converted("deliveryCost"))),
            tax: (if $p.tax then $p.tax | converted("tax") else "0" | money($b) end),
            total: ($p.total | converted("total"))
          } | compact
      else null
      end
    )
  }
| compact
