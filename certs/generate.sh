#!/usr/bin/env sh
# Regenerates the DEVELOPMENT certificate authority, TLS certificates and JWT signing key in this
# folder. None of this material is for production: the private keys are public in the repository.
#
#   ./generate.sh          everything (a new CA: every certificate signed by the old one is
#                          replaced too, and `gateway` must be rebuilt for the new JWT key)
#   ./generate.sh client   only the client certificate, signed by the existing dev-ca
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The client certificate the gateway presents to an upstream that requires mutual TLS (the ERP
# simulator's `client_ca` option), signed by the development CA.
client_cert() {
  openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=retail-gateway development client" \
    -keyout dev-client.key -out "$tmp/dev-client.csr"
  cat > "$tmp/client-ext.cnf" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EXT
  openssl x509 -req -sha256 -days 3650 -in "$tmp/dev-client.csr" \
    -CA dev-ca.crt -CAkey dev-ca.key -CAcreateserial -CAserial "$tmp/ca.srl" \
    -extfile "$tmp/client-ext.cnf" -out dev-client.crt
}

case "${1:-all}" in
  client)
    client_cert
    echo "regenerated the development client certificate in $(pwd)"
    exit 0
    ;;
  all) ;;
  *)
    echo "usage: $0 [all|client]" >&2
    exit 2
    ;;
esac

# A development CA (clients trust dev-ca.crt) ...
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
  -subj "/CN=retail-gateway development CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout dev-ca.key -out dev-ca.crt

# ... and the server certificate it signs, for localhost and the loopback addresses.
openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=localhost" \
  -keyout dev-tls.key -out "$tmp/dev-tls.csr"
cat > "$tmp/ext.cnf" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
EXT
openssl x509 -req -sha256 -days 3650 -in "$tmp/dev-tls.csr" \
  -CA dev-ca.crt -CAkey dev-ca.key -CAcreateserial -CAserial "$tmp/ca.srl" \
  -extfile "$tmp/ext.cnf" -out dev-tls.crt

client_cert

# The development JWT signing key (RSA, for RS256), which `gateway token` signs with.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out dev-jwt-signing.key
openssl pkey -in dev-jwt-signing.key -pubout -out dev-jwt-signing.pub

# Its public half as a JWKS (RFC 7517), which the example policy set's `jwt` policy reads. The
# `kid` is the key's RFC 7638 thumbprint, so it is stable for a key and changes with it;
# `gateway token` computes the same thumbprint (rebuild it after regenerating: it embeds
# dev-jwt-signing.pub to refuse any other key).
b64url() { base64 | tr -d '\n' | tr '+/' '-_' | tr -d '='; }
n=$(openssl rsa -pubin -in dev-jwt-signing.pub -noout -modulus | cut -d= -f2 | xxd -r -p | b64url)
e_hex=$(openssl rsa -pubin -in dev-jwt-signing.pub -noout -text |
  sed -n 's/^Exponent: [0-9]* (0x\([0-9a-fA-F]*\))$/\1/p')
if [ $((${#e_hex} % 2)) -eq 1 ]; then e_hex="0$e_hex"; fi
e=$(printf '%s' "$e_hex" | xxd -r -p | b64url)
kid=$(printf '{"e":"%s","kty":"RSA","n":"%s"}' "$e" "$n" | openssl dgst -sha256 -binary | b64url)
cat > dev-jwks.json <<JWKS
{
  "keys": [
    {
      "kty": "RSA",
      "use": "sig",
      "alg": "RS256",
      "kid": "$kid",
      "n": "$n",
      "e": "$e"
    }
  ]
}
JWKS
echo "regenerated development CA, certificate and keys in $(pwd)"
