# ERP error -> RFC 9457 problem details returned to the channel.
#
# Input: the ERP's answer as an exchange, {"status": <HTTP status>, "body": <parsed body or
# null>}; the ERP's errors look like {"error": {"code": "INVALID_DOCUMENT", "message": "..."}}.
# A 4xx keeps its status (the ERP refused this document); a 5xx becomes 502 Bad Gateway,
# since it is the gateway's upstream that failed. The ERP's own status and code are kept as
# extension members.

def titles:
  {
    "INVALID_DOCUMENT": "The ERP rejected the document",
    "NOT_FOUND": "The ERP does not know this resource",
    "METHOD_NOT_ALLOWED": "The ERP does not allow this method",
    "PAYLOAD_TOO_LARGE": "The document is too large for the ERP",
    "BODY_READ_FAILED": "The ERP could not read the document"
  };

(required(.status; "status (the ERP's HTTP status)") | to_int) as $erp_status
| if $erp_status < 400 or $erp_status > 599 then reject("HTTP \($erp_status) is not an error") end
| (.body.error? // {}) as $error
| ($error.code | if type == "string" and . != "" then . else null end) as $code
| (if $erp_status >= 500 then 502 else $erp_status end) as $status
| {
    type: ("urn:gateway:problem:erp-" + (($code // (if $erp_status >= 500 then "failure" else "refusal" end)) | ascii_downcase | gsub("_"; "-"))),
    title: (titles[$code // ""]
            // (if $erp_status >= 500 then "The ERP failed to process the document" else "The ERP refused the document" end)),
    status: $status,
    detail: ($error.message | if type == "string" and . != "" then . else "the ERP answered HTTP \($erp_status) without an error message" end),
    erp_code: $code,
    erp_status: $erp_status
  }
