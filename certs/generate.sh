#!/usr/bin/env sh
# Regenerates the DEVELOPMENT TLS certificate and JWT signing key in this folder.
# None of this material is for production: the private keys are public in the repository.
set -eu
cd "$(dirname "$0")"

# TLS: a self-signed certificate for localhost and the loopback addresses, valid 10 years.
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
  -subj "/CN=localhost/O=retail-gateway development" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -keyout dev-tls.key -out dev-tls.crt

# JWT: the development signing key `gateway token` refuses to replace (RS256).
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out dev-jwt-signing.key
openssl pkey -in dev-jwt-signing.key -pubout -out dev-jwt-signing.pub
echo "regenerated development certificate and keys in $(pwd)"
