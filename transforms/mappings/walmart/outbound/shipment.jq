# Canonical shipment -> Walmart Marketplace ship order lines
# (POST /v3/orders/{purchaseOrderId}/shipping).
#
# Input: {"document": <canonical shipment>, "target": {}, "listing": {}}.
# Reads channel_ids.order_id (the purchaseOrderId), channel_ids.seller_order_id (Walmart's
# sellerOrderId, required by its spec), lines[].line_id (lineNumber) and quantity (sent as a
# string), shipped_at (sent as epoch milliseconds), carrier (a carrier Walmart names goes as
# `carrier`, any other as `otherCarrier`), service (one of Walmart's method codes, else
# "Standard"), tracking[0].number and url.

def walmart_carrier:
  {"UPS": "UPS", "USPS": "USPS", "FEDEX": "FedEx", "AIRBORNE": "Airborne",
   "ONTRAC": "OnTrac", "DHL": "DHL"}[. // "" | ascii_upcase];

def walmart_method:
  {"STANDARD": "Standard", "EXPRESS": "Express", "ONEDAY": "OneDay", "FREIGHT": "Freight",
   "WHITEGLOVE": "WhiteGlove", "VALUE": "Value"}[. // "" | ascii_upcase] // "Standard";

.document as $d
| required($d.channel_ids.order_id; "channel_ids.order_id (the Walmart purchaseOrderId)") as $po
| required($d.channel_ids.seller_order_id; "channel_ids.seller_order_id (Walmart's sellerOrderId)") as $seller_order
| required($d.carrier.code // $d.carrier.name; "carrier (a code or a name)") as $_
| required($d.tracking[0].number; "tracking[0].number") as $tracking
| (($d.carrier.code | walmart_carrier) // ($d.carrier.name | walmart_carrier)) as $known
| {
    shipDateTime: ($d.shipped_at | to_epoch_ms),
    carrierName: (if $known then {carrier: $known}
                  else {otherCarrier: ($d.carrier.name // $d.carrier.code)} end),
    methodCode: ($d.service | walmart_method),
    trackingNumber: $tracking,
    trackingURL: $d.tracking[0].url
  } | compact
| . as $info
| {
    method: "POST",
    path: "/v3/orders/\($po | @uri)/shipping",
    body: {
      orderShipment: {
        orderLines: {
          orderLine: [$d.lines[] | {
            lineNumber: .line_id,
            sellerOrderId: $seller_order,
            orderLineStatuses: {
              orderLineStatus: [{
                status: "Shipped",
                statusQuantity: {unitOfMeasurement: "EACH", amount: (.quantity | tostring)},
                trackingInfo: $info
              }]
            }
          }]
        }
      }
    }
  }
