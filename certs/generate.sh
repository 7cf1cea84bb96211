#!/usr/bin/env sh
# Regenerates the DEVELOPMENT certificate authority, TLS certificate and JWT signing key in this
# folder. None of this material is for production: the private keys are public in the repository.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

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

# The development JWT signing key (RSA, for RS256), which `gateway token` signs with.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out dev-jwt-signing.key
openssl pkey -in dev-jwt-signing.key -pubout -out dev-jwt-signing.pub
echo "regenerated development CA, certificate and keys in $(pwd)"
