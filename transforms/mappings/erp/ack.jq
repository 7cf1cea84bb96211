# ERP acknowledgement -> canonical answer returned to the channel.
#
# Input: the ERP's answer as an exchange, {"status": 201, "body": {...}}, or just its body:
#   {"documentId": "ERP-ORD-000001", "documentType": "order", "status": "ACCEPTED",
#    "receivedAt": "<RFC 3339>", "reference": <string|null>, "requestId": <string|null>}

(if has("body") and (.body | type) == "object" then .body end)
| {
    status: ({"ACCEPTED": "accepted", "PENDING": "pending", "QUEUED": "pending"}[required(.status; "status") | ascii_upcase]
             // reject("the ERP acknowledged with status \(.status), neither accepted nor pending")),
    erp_document_id: required(.documentId; "documentId") | id_string,
    document_type: required(.documentType; "documentType"),
    received_at: (required(.receivedAt; "receivedAt") | to_utc),
    reference: .reference,
    request_id: .requestId
  }
