#!/usr/bin/env bash
# Regenerates the CSR seed corpus of fuzz/csr_fuzzer.cc (tests/corpus/csr): valid CSRs of every supported key
# type, DER and PEM, with and without SANs, and typical invalid ones. Run from anywhere; needs openssl.
set -euo pipefail
out="$(cd "$(dirname "$0")" && pwd)/csr"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
rm -f "$out"/*
mkdir -p "$out"
req() {  # name, key options..., then -- and extra req options
  local name="$1"; shift
  local keyopts=() reqopts=()
  while [ "$1" != "--" ]; do keyopts+=("$1"); shift; done
  shift
  reqopts=("$@")
  openssl genpkey "${keyopts[@]}" -out "$tmp/$name.key" 2>/dev/null
  openssl req -new -key "$tmp/$name.key" -outform DER -out "$out/$name.der" "${reqopts[@]}"
}
req p256 -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -- -subj "/CN=AB12CD34EF56/O=Acme"
req p256-sans -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -- -subj "/CN=unit-1.devices.example" \
    -addext "subjectAltName=DNS:unit-1.devices.example,IP:10.0.0.7,URI:urn:dev:1,email:a@b.example"
req p384 -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -- -subj "/CN=P384DEVICE/OU=Line 4/C=DE"
req ed25519 -algorithm ED25519 -- -subj "/CN=ED25519DEV/serialNumber=0042"
req rsa2048 -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -- -subj "/CN=RSADEVICE" -sha384
req ca-true -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -- -subj "/CN=WANTSCA" -addext "basicConstraints=CA:TRUE"
req k1 -algorithm EC -pkeyopt ec_paramgen_curve:secp256k1 -- -subj "/CN=K1"
req sha1 -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -- -subj "/CN=SHA1" -sha1
req utf8 -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -- -utf8 -subj "/CN=Gerät-ä/O=Fabrik Süd"
openssl req -in "$out/p256.der" -inform DER -out "$out/p256.pem"
head -c 100 "$out/p256.der" > "$out/truncated.der"
{ cat "$out/p384.der"; printf 'xx'; } > "$out/trailing.der"
sed 's/CERTIFICATE REQUEST/CERTIFICATE/' "$out/p256.pem" > "$out/wrong-label.pem"
printf '0\x80\x02\x01\x00\x00\x00' > "$out/indefinite.der"
ls "$out" | wc -l
