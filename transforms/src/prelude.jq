# Helpers every mapping can call, on top of jq's standard library and the natives written in
# Rust (decimal, decimal_add, decimal_sub, decimal_mul, decimal_neg, decimal_abs, decimal_sum,
# money_amount, money, compact, blank, nonempty, id_string, to_int, epoch_ms_to_rfc3339,
# to_utc, country_alpha2, status_rollup, to_epoch_ms, to_utc_ms, id_number, stable_number; see
# mappings/README.md).

# Refuses the input: the caller answers it as a client error carrying this message, where any
# other error is reported as a failure of the mapping.
def reject($message): error({rejected: $message});

# The value of f, or a rejection naming what is missing when it is null or absent.
def required(f; $what): f // reject("missing \($what)");

# The decimal sum of an array of {amount} money values, as money in $currency.
def money_sum($currency): map(.amount) | decimal_sum | money($currency);

# f applied to a value that is there; null stays null. (`.x | values | f` would instead make
# a whole object construction produce nothing when .x is null.)
def maybe(f): if . == null then null else f end;

# The one item of an outbound inventory event (input: {document, target, listing}), checked
# for what every marketplace needs: a single item, a snapshot (marketplaces take stock levels,
# not changes) and its per-SKU sequence (an older level must never overwrite a newer one).
def outbound_item:
  (.document.items // []) as $items
  | if ($items | length) != 1 then
      reject("an outbound inventory event carries exactly one item, got \($items | length)")
    end
  | $items[0]
  | if .kind != "snapshot" then
      reject("a \(.kind // "kindless") item cannot be sent: marketplaces take stock levels (snapshots), not deltas")
    elif .sequence == null then
      reject("missing sequence: outbound inventory needs the item's per-SKU sequence")
    else . end;

# The stock level to offer: the item's available units, never below zero (a negative level,
# Shopify's overselling, offers nothing).
def sellable: required(.quantities.available; "quantities.available") | if . < 0 then 0 else . end;
