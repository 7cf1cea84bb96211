#!/usr/bin/env bash
# Instructions per request of a gateway build, counted by valgrind's callgrind: exact and
# repeatable where the load test's CPU times move by tens of percent on a shared machine, so
# two builds compare on one request path to the instruction.
#   scripts/instructions.sh [--bin PATH] [--requests N] [--keep FILE] [--scenario ID] [--p0]
# It starts bench-upstream, the gateway (one worker) under callgrind with the S1 passthrough
# route, sends 300 warm-up requests, then counts N keep-alive GETs (default 2000) and prints the
# instructions per request. With --scenario, the policy file and the requests are loadbench's
# for that gateway scenario (`loadbench --prepare`: e.g. ALL, its Amazon orders with their
# tokens and fresh idempotency keys; a body scenario is worth --requests 300, valgrind being
# slow). --keep FILE keeps callgrind's output (`callgrind_annotate FILE`
# shows where they go). --p0 counts the matrix's P0 (Pingora alone, `p0-passthrough`) on the
# same S1 requests instead of the gateway, the reference S1 is held to. Not timing: valgrind runs the gateway ~50 times slower. Note that
# callgrind counts each byte of a `rep movsb` copy, and hides CPU features (SHA extensions)
# that native runs use, so memcpy and SHA-256 weigh more here than in time.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/gateway
requests=2000
keep=""
scenario=""
p0=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    --scenario) scenario=$2; shift 2 ;;
    --p0) p0=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
[ -n "$scenario" ] && [ -n "$p0" ] && { echo "--p0 counts the S1 requests only" >&2; exit 2; }
[ -n "$p0" ] && bin=target/release/p0-passthrough
[ -x "$bin" ] && [ -x target/release/bench-upstream ] && [ -x target/release/loadbench ] ||
  cargo build --release -p gateway -p benches --bin gateway --bin bench-upstream --bin loadbench \
    --bin p0-passthrough

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 240); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1',$1)).close()" 2>/dev/null && return 0
    sleep 0.5
  done
  echo "nothing listens on $1" >&2; exit 1
}

up=$(free_port)
target/release/bench-upstream --listen "127.0.0.1:$up" > "$work/upstream.log" 2>&1 &
pids+=($!)
disown
wait_port "$up"
warmup=300
if [ -n "$scenario" ]; then
  target/release/loadbench --no-build --scenarios "$scenario" --prepare "$work" \
    --prepare-upstream "127.0.0.1:$up" --prepare-requests $((warmup + requests))
  what="$scenario, $requests requests"
  set -a; . "$work/env"; set +a   # the variables the scenario's gateway runs with
else
  cat > "$work/policy.yaml" <<EOF
version: 1
upstreams:
  erp:
    endpoints: ["127.0.0.1:$up"]
routes:
  - name: passthrough
    methods: [GET]
    path: /erp/v1/{collection}/{id}
    upstream: erp
    upstream_path: /erp/v1/{collection}/{id}
EOF
  req='GET /erp/v1/orders/ERP-ORD-000001 HTTP/1.1\r\nHost: bench\r\nAccept: */*\r\n\r\n'
  for _ in $(seq 1 $((warmup + requests))); do printf '%b' "$req"; done > "$work/requests.http"
  what="S1 passthrough, $requests GETs"
  [ -n "$p0" ] && what="P0, Pingora alone, $requests GETs"
fi
port=$(free_port)
if [ -n "$p0" ]; then
  args=(--listen "127.0.0.1:$port" --upstream "127.0.0.1:$up" --threads 1)
else
  args=(run -c "$work/policy.yaml" --http "127.0.0.1:$port" --admin "127.0.0.1:$(free_port)"
    --threads 1 --grace-period 0 --shutdown-timeout 1)
fi
valgrind --tool=callgrind --callgrind-out-file="$work/cg" --dump-instr=no \
  "$bin" "${args[@]}" > "$work/gateway.log" 2>&1 &
vg=$!
pids+=($vg)
disown
wait_port "$port"

# the requests of requests.http from the FIRST-th, N of them, on one keep-alive connection, each
# answer read whole before the next request
client() {
  python3 - "$port" "$work/requests.http" "$1" "$2" <<'PY'
import socket, sys
port, path, first, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def length(head):
    return next((int(l.split(b":", 1)[1]) for l in head.split(b"\r\n")[1:]
                 if l.lower().startswith(b"content-length:")), 0)
wire, reqs = open(path, "rb").read(), []
while wire:
    end = wire.index(b"\r\n\r\n") + 4
    end += length(wire[:end])
    reqs.append(wire[:end])
    wire = wire[end:]
assert len(reqs) >= first + n, f"{path} holds {len(reqs)} requests"
s = socket.create_connection(("127.0.0.1", port))
buf, ok = b"", 0
for req in reqs[first:first + n]:
    s.sendall(req)
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0 and len(buf) >= end + 4 + length(buf[:end]):
            ok += buf.startswith(b"HTTP/1.1 2")
            buf = buf[end + 4 + length(buf[:end]):]
            break
        data = s.recv(65536)
        if not data:
            sys.exit("the gateway closed the connection")
        buf += data
if ok != n:
    sys.exit(f"{n - ok} of {n} requests were not answered 2xx")
PY
}
client 0 "$warmup"
callgrind_control -z "$vg" > /dev/null 2>&1
client "$warmup" "$requests"
callgrind_control -d "$vg" > /dev/null 2>&1
dump=$(ls "$work"/cg.* | head -1)
total=$(callgrind_annotate "$dump" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "$bin: $((total / requests)) instructions per request ($what)"
[ -n "$keep" ] && cp "$dump" "$keep"
exit 0
