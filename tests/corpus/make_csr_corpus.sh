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
# Hand-made CSRs with exactly the octets an adversarial station sends (strict_rules.h): Debian's
# python3-cryptography signs, the DER is written by hand.
OUT="$out" /usr/bin/python3 - <<'PY'
import os
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
out = os.environ["OUT"]
def tlv(tag, c):
    n = len(c)
    if n < 0x80: return bytes([tag, n]) + c
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(b)]) + b + c
def oid(dotted):
    p = [int(x) for x in dotted.split(".")]
    body = bytes([40 * p[0] + p[1]])
    for v in p[2:]:
        chunk = [v & 0x7f]
        v >>= 7
        while v: chunk.insert(0, 0x80 | (v & 0x7f)); v >>= 7
        body += bytes(chunk)
    return tlv(6, body)
seq = lambda *p: tlv(0x30, b"".join(p))
def name(*atvs): return seq(*[tlv(0x31, seq(oid(o), tlv(t, v))) for o, t, v in atvs])
def ext_req(*exts): return seq(oid("1.2.840.113549.1.9.14"), tlv(0x31, seq(*exts)))
def san(*names): return seq(oid("2.5.29.17"), tlv(4, seq(*[tlv(t, v) for t, v in names])))
key = ec.generate_private_key(ec.SECP256R1())
SPKI = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
def csr(fname, subject, attrs=b"", spki=SPKI):
    info = seq(tlv(2, b"\0"), subject, spki, tlv(0xa0, attrs))
    sig = key.sign(info, ec.ECDSA(hashes.SHA256()))
    open(os.path.join(out, fname), "wb").write(seq(info, seq(oid("1.2.840.10045.4.3.2")), tlv(3, b"\0" + sig)))
CN = "2.5.4.3"
csr("printable-at.der", name((CN, 0x13, b"a@b*c")))
csr("printable-newline.der", name((CN, 0x13, b"a\nb")))
csr("utf8-overlong.der", name((CN, 0x0c, b"\xc0\xaf")))
csr("teletex.der", name((CN, 0x14, b"abc")))
csr("country-3.der", name((CN, 0x0c, b"X"), ("2.5.4.6", 0x0c, b"DEU")))
csr("email-ff.der", name((CN, 0x0c, b"X"), ("1.2.840.113549.1.9.1", 0x16, b"a\xff@x.example")))
csr("dns-newline.der", name((CN, 0x0c, b"X")), ext_req(san((0x82, b"a\nb.example"))))
csr("dns-ff.der", name((CN, 0x0c, b"X")), ext_req(san((0x82, b"a\xff.example"))))
csr("dns-wildcard.der", name((CN, 0x0c, b"X")), ext_req(san((0x82, b"*.devices.example"))))
csr("dns-boundary.der", name((CN, 0x0c, b"X")), ext_req(san((0x82, b"a" * 63 + b"." + b"b" * 63 + b"." + b"c" * 63 + b"." + b"d" * 61))))
csr("uri-space.der", name((CN, 0x0c, b"X")), ext_req(san((0x86, b"http://x/a b"))))
csr("email-san-bad.der", name((CN, 0x0c, b"X")), ext_req(san((0x81, b"no-at.example"))))
csr("keyusage.der", name((CN, 0x0c, b"X")), ext_req(seq(oid("2.5.29.15"), tlv(1, b"\xff"), tlv(4, tlv(3, b"\x07\x80")))))
csr("san-twice.der", name((CN, 0x0c, b"X")), ext_req(san((0x82, b"a.example")), san((0x82, b"b.example"))))
csr("extreq-twice.der", name((CN, 0x0c, b"X")), ext_req(san((0x82, b"a.example"))) + ext_req())
csr("extreq-malformed.der", name((CN, 0x0c, b"X")), seq(oid("1.2.840.113549.1.9.14"), tlv(0x31, tlv(4, b"x"))))
csr("challenge-password.der", name((CN, 0x0c, b"X")), seq(oid("1.2.840.113549.1.9.7"), tlv(0x31, tlv(0x0c, b"pw"))))
point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
ec_alg = seq(oid("1.2.840.10045.2.1"), oid("1.2.840.10045.3.1.7"))
csr("ec-compressed.der", name((CN, 0x0c, b"X")), spki=seq(ec_alg, tlv(3, b"\0" + point)))
raw = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
csr("ec-hybrid.der", name((CN, 0x0c, b"X")), spki=seq(ec_alg, tlv(3, b"\0" + bytes([6 + (raw[-1] & 1)]) + raw[1:])))
# Ed25519 identity key with the signature R = identity, S = 0: verifies for every message.
ident = b"\x01" + b"\0" * 31
info = seq(tlv(2, b"\0"), name((CN, 0x0c, b"FORGED")), seq(seq(oid("1.3.101.112")), tlv(3, b"\0" + ident)), tlv(0xa0, b""))
open(os.path.join(out, "ed25519-small-order.der"), "wb").write(seq(info, seq(oid("1.3.101.112")), tlv(3, b"\0" + ident + b"\0" * 32)))
# RSA with a 2048-bit exponent (signed by the EC key: refused before any verification).
n = b"\xc5" * 256
e = b"\x80" + b"\0" * 254 + b"\x01"
rsa_spki = seq(seq(oid("1.2.840.113549.1.1.1"), tlv(5, b"")), tlv(3, b"\0" + seq(tlv(2, b"\0" + n), tlv(2, b"\0" + e))))
csr("rsa-huge-exponent.der", name((CN, 0x0c, b"X")), spki=rsa_spki)
PY
{ cat "$out/p256.pem"; echo junk; } > "$out/pem-trailing.pem"
cat "$out/p256.pem" "$out/p256.pem" > "$out/pem-two-blocks.pem"
ls "$out" | wc -l
