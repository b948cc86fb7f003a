#!/usr/bin/python3
"""fake_iot: a fake AWS IoT control plane for linesign's tests (HTTP on loopback, REST-JSON, SigV4).

Why Python: the standard library has a threaded HTTP server, and a SigV4 verifier written here, in another
language and from the specification, is an independent check of linesign's C++ signer (the real AWS CLI proves
this verifier right: tests/fake_iot/aws_cli_test.py). python3-cryptography (Debian) parses and verifies the
certificates. Nothing here is production code.

What it implements, with AWS IoT's semantics (../shared/testdata/aws-iot-model/service-2.json for the wire):
GetRegistrationCode, RegisterCACertificate, UpdateCACertificate, DescribeCACertificate, RegisterCertificate,
RegisterCertificateWithoutCA, UpdateCertificate, DescribeCertificate, ListCertificates (paged),
CreateThing, AttachThingPrincipal, AttachPolicy.
- Every request's SigV4 signature is verified (access key, secret, session token, region, service iot or
  execute-api, date within 15 minutes); a bad one gets InvalidSignatureException (403) quoting the canonical
  request, as AWS does.
- Certificate id = lower-case hex SHA-256 of the DER; a repeat registration is 409 ResourceAlreadyExistsException;
  RegisterCertificate needs a registered ACTIVE CA that signed the certificate (CertificateStateException when the
  CA is INACTIVE, CertificateConflictException when two registered CAs share subject and key); a DEFAULT-mode CA
  needs a verification certificate whose CN is the registration code, signed by the CA's key.
- CreateThing again with the same attributes succeeds; with others, ResourceAlreadyExistsException.
- A token bucket per operation (AWS's default quotas unless --rates) answers ThrottlingException (HTTP 400).
- Faults at configurable rates: 5xx before the effect, 5xx after the effect, timeouts (no answer), latency.
- A call log: GET /__fake/calls[?since=SEQ] (JSON; entries after SEQ), and --call-log FILE written at exit. GET
  /__fake/state dumps the registry. Each entry names the device certificate it concerns ("certificate", read from
  the request); the call-log analysis functions below are what the tests and the benchmark assert with.
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import json
import os
import random
import re
import signal
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

# AWS's default quotas per account and region (requests per second).
DEFAULT_RATES = {
    "GetRegistrationCode": 10, "RegisterCACertificate": 10, "UpdateCACertificate": 10,
    "DescribeCACertificate": 10, "RegisterCertificate": 10, "RegisterCertificateWithoutCA": 10,
    "UpdateCertificate": 10, "DescribeCertificate": 10, "ListCertificates": 10,
    "AttachPolicy": 15, "CreateThing": 100, "AttachThingPrincipal": 100,
}

HTTP_STATUS = {
    "ResourceAlreadyExistsException": 409, "CertificateConflictException": 409, "ThrottlingException": 400,
    "LimitExceededException": 410, "CertificateStateException": 406, "CertificateValidationException": 400,
    "RegistrationCodeValidationException": 400, "InvalidRequestException": 400,
    "ResourceNotFoundException": 404, "UnauthorizedException": 401, "ServiceUnavailableException": 503,
    "InternalFailureException": 500, "InvalidSignatureException": 403, "UnrecognizedClientException": 403,
    "IncompleteSignatureException": 403, "UnknownOperationException": 404,
}

THING_NAME = re.compile(r"[a-zA-Z0-9:_-]{1,128}")


class ApiError(Exception):
    def __init__(self, code, message, **extra):
        super().__init__(message)
        self.code, self.message, self.extra = code, message, extra


class TokenBucket:
    def __init__(self, rate, burst):
        self.rate, self.burst = float(rate), float(burst)
        self.tokens, self.last = float(burst), time.monotonic()

    def take(self):
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


# --- SigV4, written from AWS's specification -------------------------------------------------------------------

def _enc(s):
    return urllib.parse.quote(s, safe="-_.~")


def canonical_uri(raw_path):
    out = []
    for seg in raw_path.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if out:
                out.pop()
        else:
            out.append(seg)
    path = "/" + "/".join(out) + ("/" if out and raw_path.endswith("/") else "")
    return urllib.parse.quote(path, safe="/-_.~")


def canonical_query(raw_query):
    pairs = []
    for part in raw_query.split("&") if raw_query else []:
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((_enc(urllib.parse.unquote(name)), _enc(urllib.parse.unquote(value))))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def hmac256(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


AUTH_RE = re.compile(r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                     r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$")


def verify_sigv4(cfg, method, raw_path, raw_query, headers, body):
    """Returns None when the signature is right, else an ApiError."""
    auth = headers.get("Authorization")
    if not auth:
        return ApiError("MissingAuthenticationTokenException", "Missing Authentication Token")
    m = AUTH_RE.match(auth)
    if not m:
        return ApiError("IncompleteSignatureException", "Authorization header is not AWS4-HMAC-SHA256 with "
                        "Credential, SignedHeaders and Signature")
    key_id, date, region, service, signed, signature = m.groups()
    if key_id != cfg.access_key:
        return ApiError("UnrecognizedClientException", "The security token included in the request is invalid.")
    token = headers.get("X-Amz-Security-Token")
    if (cfg.session_token or None) != (token or None):
        return ApiError("UnrecognizedClientException", "The security token included in the request is invalid.")
    if region != cfg.region:
        return ApiError("InvalidSignatureException", f"Credential should be scoped to a valid region, not '{region}'.")
    if service not in ("iot", "execute-api"):
        return ApiError("InvalidSignatureException", f"Credential should be scoped to correct service: 'iot'.")
    amz_date = headers.get("X-Amz-Date", "")
    try:
        when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return ApiError("IncompleteSignatureException", "X-Amz-Date is missing or malformed")
    if amz_date[:8] != date:
        return ApiError("InvalidSignatureException", "Date in Credential scope does not match YYYYMMDD from X-Amz-Date")
    if abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) > 900:
        return ApiError("InvalidSignatureException", "Signature expired: " + amz_date)
    names = signed.split(";")
    if "host" not in names:
        return ApiError("InvalidSignatureException", "'Host' must be a signed header")
    if token and "x-amz-security-token" not in names:
        return ApiError("InvalidSignatureException", "'X-Amz-Security-Token' must be a signed header")
    lines = []
    for name in sorted(names):
        values = headers.get_all(name)
        if values is None:
            return ApiError("InvalidSignatureException", f"signed header '{name}' is not in the request")
        lines.append(name + ":" + ",".join(" ".join(v.split()) for v in values))
    creq = "\n".join([method, canonical_uri(raw_path), canonical_query(raw_query), "\n".join(lines) + "\n",
                      ";".join(sorted(names)), hashlib.sha256(body).hexdigest()])
    scope = f"{date}/{region}/{service}/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])
    k = hmac256(("AWS4" + cfg.secret_key).encode(), date)
    for part in (region, service, "aws4_request"):
        k = hmac256(k, part)
    expected = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        # AWS quotes what it computed; so does the fake, so a client is tested on not repeating it.
        return ApiError("InvalidSignatureException",
                        "The request signature we calculated does not match the signature you provided. Check your "
                        "AWS Secret Access Key and signing method. Consult the service documentation for details.\n\n"
                        f"The Canonical String for this request should have been\n'{creq}'\n\n"
                        f"The String-to-Sign should have been\n'{sts}'\n")
    return None


# --- certificates -----------------------------------------------------------------------------------------------

def load_cert(pem, what):
    try:
        cert = x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)
    except Exception:  # noqa: BLE001 - any parse failure is the same answer
        raise ApiError("CertificateValidationException", f"The {what} is not a valid PEM X.509 certificate")
    return cert, cert.public_bytes(serialization.Encoding.DER)


def signed_by(cert, issuer_public_key):
    try:
        if isinstance(issuer_public_key, ec.EllipticCurvePublicKey):
            issuer_public_key.verify(cert.signature, cert.tbs_certificate_bytes,
                                     ec.ECDSA(cert.signature_hash_algorithm))
        elif isinstance(issuer_public_key, rsa.RSAPublicKey):
            issuer_public_key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                                     cert.signature_hash_algorithm)
        elif isinstance(issuer_public_key, ed25519.Ed25519PublicKey):
            issuer_public_key.verify(cert.signature, cert.tbs_certificate_bytes)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def cn_of(cert):
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return attrs[0].value if attrs else ""


def now_epoch():
    return round(time.time(), 3)


# --- the registry ------------------------------------------------------------------------------------------------

class Registry:
    def __init__(self, cfg):
        self.cfg = cfg
        self.lock = threading.Lock()
        self.registration_code = hashlib.sha256(f"regcode-{cfg.seed}-{uuid.uuid4()}".encode()).hexdigest()
        self.cas = {}     # id -> dict
        self.certs = {}   # id -> dict (insertion order = creation order)
        self.things = {}  # name -> dict
        self.policies = {p: set() for p in cfg.policies}  # name -> targets

    def arn(self, kind, rest):
        return f"arn:aws:iot:{self.cfg.region}:{self.cfg.account}:{kind}/{rest}"

    # Each handler: (path params, query dict, headers, json body) -> (status, answer dict or None)
    def get_registration_code(self, p, q, h, b):
        return 200, {"registrationCode": self.registration_code}

    def register_ca_certificate(self, p, q, h, b):
        pem = b.get("caCertificate")
        if not isinstance(pem, str) or not pem:
            raise ApiError("InvalidRequestException", "caCertificate is required")
        mode = b.get("certificateMode", "DEFAULT")
        if mode not in ("DEFAULT", "SNI_ONLY"):
            raise ApiError("InvalidRequestException", f"certificateMode '{mode}' is not DEFAULT or SNI_ONLY")
        ca, der = load_cert(pem, "CA certificate")
        try:
            is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise ApiError("CertificateValidationException", "The certificate is not a CA certificate")
        cid = hashlib.sha256(der).hexdigest()
        if mode == "DEFAULT":
            vpem = b.get("verificationCertificate")
            if not vpem:
                raise ApiError("InvalidRequestException", "verificationCertificate is required in DEFAULT mode")
            ver, _ = load_cert(vpem, "verification certificate")
            if cn_of(ver) != self.registration_code:
                raise ApiError("RegistrationCodeValidationException",
                               "The verification certificate's common name is not this account's registration code")
            if not signed_by(ver, ca.public_key()):
                raise ApiError("CertificateValidationException",
                               "The verification certificate is not signed by the CA certificate's key")
        with self.lock:
            if cid in self.cas:
                raise ApiError("ResourceAlreadyExistsException", "The CA certificate is already registered",
                               resourceId=cid, resourceArn=self.cas[cid]["certificateArn"])
            self.cas[cid] = {
                "certificateArn": self.arn("cacert", cid), "certificateId": cid,
                "status": "ACTIVE" if q.get("setAsActive") == "true" else "INACTIVE",
                "certificatePem": pem, "ownedBy": self.cfg.account, "creationDate": now_epoch(),
                "autoRegistrationStatus": "ENABLE" if q.get("allowAutoRegistration") == "true" else "DISABLE",
                "certificateMode": mode, "_cert": ca,
            }
        return 200, {"certificateArn": self.arn("cacert", cid), "certificateId": cid}

    def _ca(self, cid):
        ca = self.cas.get(cid)
        if ca is None:
            raise ApiError("ResourceNotFoundException", f"CA certificate {cid} does not exist")
        return ca

    def update_ca_certificate(self, p, q, h, b):
        with self.lock:
            ca = self._ca(p["id"])
            status, auto = q.get("newStatus"), q.get("newAutoRegistrationStatus")
            if status is not None and status not in ("ACTIVE", "INACTIVE"):
                raise ApiError("InvalidRequestException", f"newStatus '{status}' is not ACTIVE or INACTIVE")
            if auto is not None and auto not in ("ENABLE", "DISABLE"):
                raise ApiError("InvalidRequestException", f"newAutoRegistrationStatus '{auto}' is not ENABLE or DISABLE")
            if status:
                ca["status"] = status
            if auto:
                ca["autoRegistrationStatus"] = auto
        return 200, None

    def describe_ca_certificate(self, p, q, h, b):
        with self.lock:
            ca = self._ca(p["id"])
            return 200, {"certificateDescription": {k: v for k, v in ca.items() if not k.startswith("_")},
                         "registrationConfig": {}}

    def _register(self, pem, der, status, ca_id, mode):
        """Records a device certificate; the caller holds self.lock."""
        cid = hashlib.sha256(der).hexdigest()
        if cid in self.certs:
            raise ApiError("ResourceAlreadyExistsException", "The certificate is already provisioned or registered",
                           resourceId=cid, resourceArn=self.certs[cid]["certificateArn"])
        self.certs[cid] = {
            "certificateArn": self.arn("cert", cid), "certificateId": cid, "caCertificateId": ca_id,
            "status": status, "certificatePem": pem, "ownedBy": self.cfg.account, "creationDate": now_epoch(),
            "certificateMode": mode,
        }
        return 200, {"certificateArn": self.arn("cert", cid), "certificateId": cid}

    def _device_cert(self, b):
        pem = b.get("certificatePem")
        if not isinstance(pem, str) or not pem:
            raise ApiError("InvalidRequestException", "certificatePem is required")
        cert, der = load_cert(pem, "certificate")
        if self.cfg.reject_cn and re.fullmatch(self.cfg.reject_cn, cn_of(cert)):
            raise ApiError("CertificateValidationException", "The certificate is rejected (fake: --reject-cn)")
        return pem, cert, der

    @staticmethod
    def _status(q, b):
        status = b.get("status") or ("ACTIVE" if q.get("setAsActive") == "true" else "INACTIVE")
        if status not in ("ACTIVE", "INACTIVE", "REVOKED", "PENDING_TRANSFER", "REGISTER_INACTIVE",
                          "PENDING_ACTIVATION"):
            raise ApiError("InvalidRequestException", f"status '{status}' is not a certificate status")
        return status

    def register_certificate(self, p, q, h, b):
        pem, cert, der = self._device_cert(b)
        status = self._status(q, b)
        with self.lock:
            if b.get("caCertificatePem"):
                _, ca_der = load_cert(b["caCertificatePem"], "CA certificate")
                ca = self.cas.get(hashlib.sha256(ca_der).hexdigest())
                if ca is None:
                    raise ApiError("CertificateValidationException", "The CA certificate (caCertificatePem) is not registered")
                candidates = [ca] if signed_by(cert, ca["_cert"].public_key()) else []
                if not candidates:
                    raise ApiError("CertificateValidationException", "The certificate is not signed by the CA certificate given")
            else:
                candidates = [ca for ca in self.cas.values()
                              if ca["_cert"].subject == cert.issuer and signed_by(cert, ca["_cert"].public_key())]
                if not candidates:
                    raise ApiError("CertificateValidationException", "No registered CA certificate signed the certificate")
            if len(candidates) > 1:
                raise ApiError("CertificateConflictException", "More than one registered CA certificate has the "
                               "subject and public key of the certificate's issuer")
            ca = candidates[0]
            if ca["status"] != "ACTIVE":
                raise ApiError("CertificateStateException", f"The CA certificate {ca['certificateId']} is not ACTIVE")
            return self._register(pem, der, status, ca["certificateId"], ca["certificateMode"])

    def register_certificate_without_ca(self, p, q, h, b):
        pem, cert, der = self._device_cert(b)
        status = self._status(q, b)
        with self.lock:
            return self._register(pem, der, status, None, "SNI_ONLY")

    def _cert(self, cid):
        c = self.certs.get(cid)
        if c is None:
            raise ApiError("ResourceNotFoundException", f"The certificate {cid} does not exist")
        return c

    def describe_certificate(self, p, q, h, b):
        with self.lock:
            c = self._cert(p["id"])
            return 200, {"certificateDescription": {k: v for k, v in c.items() if v is not None}}

    def update_certificate(self, p, q, h, b):
        status = q.get("newStatus")
        if status not in ("ACTIVE", "INACTIVE", "REVOKED", "PENDING_TRANSFER", "REGISTER_INACTIVE",
                          "PENDING_ACTIVATION"):
            raise ApiError("InvalidRequestException", f"newStatus '{status}' is not a certificate status")
        with self.lock:
            c = self._cert(p["id"])
            if c["status"] == "REVOKED" and status == "ACTIVE":
                raise ApiError("CertificateStateException", "A REVOKED certificate cannot be activated")
            c["status"] = status
        return 200, None

    def list_certificates(self, p, q, h, b):
        try:
            size = int(q.get("pageSize", "25"))
        except ValueError:
            raise ApiError("InvalidRequestException", "pageSize is not a number")
        if not 1 <= size <= 250:
            raise ApiError("InvalidRequestException", "pageSize must be 1 to 250")
        ascending = q.get("isAscendingOrder", "false") == "true"
        start = 0
        if "marker" in q:
            try:
                start = int(base64.urlsafe_b64decode(q["marker"].encode()).decode().split(":")[1])
            except Exception:  # noqa: BLE001
                raise ApiError("InvalidRequestException", "marker is not one this service returned")
        with self.lock:
            items = list(self.certs.values())
        if not ascending:
            items.reverse()
        page = items[start:start + size]
        answer = {"certificates": [{k: c[k] for k in ("certificateArn", "certificateId", "status",
                                                      "certificateMode", "creationDate")} for c in page]}
        if start + size < len(items):
            answer["nextMarker"] = base64.urlsafe_b64encode(f"m:{start + size}".encode()).decode()
        return 200, answer

    def create_thing(self, p, q, h, b):
        name = p["name"]
        if not THING_NAME.fullmatch(name):
            raise ApiError("InvalidRequestException", f"thingName '{name}' does not match [a-zA-Z0-9:_-]+")
        attributes = (b.get("attributePayload") or {}).get("attributes") or {}
        type_name = b.get("thingTypeName")
        with self.lock:
            t = self.things.get(name)
            if t is not None:
                if t["attributes"] != attributes or t["thingTypeName"] != type_name:
                    raise ApiError("ResourceAlreadyExistsException",
                                   f"Thing {name} already exists in account with different attributes",
                                   resourceId=t["thingId"], resourceArn=t["thingArn"])
            else:
                t = self.things[name] = {"thingName": name, "thingArn": self.arn("thing", name),
                                         "thingId": str(uuid.uuid4()), "attributes": attributes,
                                         "thingTypeName": type_name, "principals": set()}
            return 200, {"thingName": name, "thingArn": t["thingArn"], "thingId": t["thingId"]}

    def _principal(self, arn):
        for c in self.certs.values():
            if c["certificateArn"] == arn:
                return c
        raise ApiError("ResourceNotFoundException", f"The principal {arn} does not exist")

    def attach_thing_principal(self, p, q, h, b):
        principal = h.get("x-amzn-principal")
        if not principal:
            raise ApiError("InvalidRequestException", "the x-amzn-principal header is required")
        with self.lock:
            t = self.things.get(p["name"])
            if t is None:
                raise ApiError("ResourceNotFoundException", f"Thing {p['name']} cannot be found.")
            self._principal(principal)
            t["principals"].add(principal)
        return 200, {}

    def attach_policy(self, p, q, h, b):
        target = b.get("target")
        if not target:
            raise ApiError("InvalidRequestException", "target is required")
        with self.lock:
            if p["name"] not in self.policies:
                raise ApiError("ResourceNotFoundException", f"Policy {p['name']} does not exist")
            self._principal(target)
            self.policies[p["name"]].add(target)
        return 200, None

    def state(self):
        with self.lock:
            strip = lambda d: {k: v for k, v in d.items() if not k.startswith("_")}  # noqa: E731
            return {
                "registrationCode": self.registration_code,
                "caCertificates": [strip(c) for c in self.cas.values()],
                "certificates": list(self.certs.values()),
                "things": [dict(t, principals=sorted(t["principals"])) for t in self.things.values()],
                "policies": {k: sorted(v) for k, v in self.policies.items()},
            }


# --- the certificate a call concerns, and call-log analysis (used by the registration harness and benchmark) ---

REGISTER_OPERATIONS = ("RegisterCertificate", "RegisterCertificateWithoutCA")


def _pem_certificate_id(pem):
    """The AWS certificate id (hex SHA-256 of the DER) of the first PEM block in `pem`, or None."""
    if not isinstance(pem, str):
        return None
    m = re.search(r"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----", pem)
    if not m:
        return None
    try:
        return hashlib.sha256(base64.b64decode("".join(m.group(1).split()), validate=True)).hexdigest()
    except ValueError:
        return None


def _arn_certificate_id(arn):
    """The certificate id at the end of a certificate ARN (arn:aws:iot:REGION:ACCOUNT:cert/ID), or None."""
    if isinstance(arn, str) and ":cert/" in arn:
        return arn.rsplit("/", 1)[1]
    return None


def call_certificate(op, params, headers, body):
    """call_certificate: the id of the device certificate a call concerns, read from the request alone (so
    throttled, faulted and refused calls are attributed too); None for calls about no single certificate
    (CreateThing: its resource is the thing's name)."""
    if op in REGISTER_OPERATIONS:
        try:
            doc = json.loads(body) if body else {}
        except ValueError:
            return None
        return _pem_certificate_id(doc.get("certificatePem")) if isinstance(doc, dict) else None
    if op in ("DescribeCertificate", "UpdateCertificate"):
        return params.get("id")
    if op == "AttachThingPrincipal":
        return _arn_certificate_id(headers.get("x-amzn-principal"))
    if op == "AttachPolicy":
        try:
            doc = json.loads(body) if body else {}
        except ValueError:
            return None
        return _arn_certificate_id(doc.get("target")) if isinstance(doc, dict) else None
    return None


def call_succeeded(call):
    """call_succeeded: the fake answered 2xx with its effect applied (no throttle, no fault, no AWS error)."""
    return call.get("error") is None and call.get("http") is not None and call.get("operation") is not None


def call_took_effect(call):
    """call_took_effect: the call changed the fake's state: it succeeded, or it was answered 5xx after the effect."""
    return call_succeeded(call) or call.get("fault") == "5xx-after"


def step_key(call):
    """step_key: what a successful call did, as a hashable key: the same key twice is the same effect twice
    (register, create-thing and attach-* of one certificate); None for calls that are not device steps."""
    op = call.get("operation")
    if op in REGISTER_OPERATIONS:
        return ("register", call.get("certificate"))
    if op == "CreateThing":
        return ("create-thing", call.get("resource"))
    if op == "AttachThingPrincipal":
        return ("attach-principal", call.get("resource"), call.get("certificate"))
    if op == "AttachPolicy":
        return ("attach-policy", call.get("resource"), call.get("certificate"))
    return None


def repeated_successful_steps(calls):
    """repeated_successful_steps: {step key: [seq, ...]} for every device step that succeeded more than once."""
    seen = {}
    for c in calls:
        key = step_key(c)
        if key is not None and call_succeeded(c):
            seen.setdefault(key, []).append(c["seq"])
    return {k: v for k, v in seen.items() if len(v) > 1}


def describes_without_conflict(calls):
    """describes_without_conflict: DescribeCertificate calls not answering a registration of the same certificate
    refused with ResourceAlreadyExistsException (409) earlier: each 409 pays for at most one DescribeCertificate,
    so the happy path has none. Returns the offending calls."""
    conflicts, bad = {}, []
    for c in calls:
        cid = c.get("certificate")
        if c.get("operation") in REGISTER_OPERATIONS and c.get("error") == "ResourceAlreadyExistsException":
            conflicts[cid] = conflicts.get(cid, 0) + 1
        elif c.get("operation") == "DescribeCertificate":
            if conflicts.get(cid, 0) > 0:
                conflicts[cid] -= 1
            else:
                bad.append(c)
    return bad


def operation_summary(calls):
    """operation_summary: {operation: {"calls", "ok", "throttled", "5xx", "refused", "rate_ok_per_s"}}, where
    rate_ok_per_s is the successful calls over the span from the operation's first to its last success."""
    out = {}
    for c in calls:
        op = c.get("operation")
        if op is None:
            continue
        s = out.setdefault(op, {"calls": 0, "ok": 0, "throttled": 0, "5xx": 0, "refused": 0, "_t": []})
        s["calls"] += 1
        if call_succeeded(c):
            s["ok"] += 1
            s["_t"].append(c["t"])
        elif c.get("error") == "ThrottlingException":
            s["throttled"] += 1
        elif c.get("fault") in ("5xx", "5xx-after", "timeout"):
            s["5xx"] += 1
        else:
            s["refused"] += 1
    for s in out.values():
        t = s.pop("_t")
        s["rate_ok_per_s"] = round((len(t) - 1) / (t[-1] - t[0]), 2) if len(t) > 1 and t[-1] > t[0] else None
    return out


def incomplete_registrations(state, certificate_ids, thing_of, policy):
    """incomplete_registrations: {certificate id: what is missing} for those of `certificate_ids` that are not
    registered, ACTIVE, attached to their thing (thing_of(id) names it; None: no thing) and to `policy` (None:
    none). Empty when all are complete."""
    certs = {c["certificateId"]: c for c in state["certificates"]}
    things = {t["thingName"]: t for t in state["things"]}
    attached = set(state["policies"].get(policy, [])) if policy else set()
    missing = {}
    for cid in certificate_ids:
        c = certs.get(cid)
        if c is None:
            missing[cid] = "not registered"
            continue
        problems = []
        if c["status"] != "ACTIVE":
            problems.append(f"status {c['status']}")
        thing = thing_of(cid)
        if thing is not None and c["certificateArn"] not in things.get(thing, {}).get("principals", []):
            problems.append(f"not attached to thing {thing}")
        if policy and c["certificateArn"] not in attached:
            problems.append(f"policy {policy} not attached")
        if problems:
            missing[cid] = ", ".join(problems)
    return missing


ID = r"(?P<id>(?:0x)?[a-fA-F0-9]{64})"
ROUTES = [
    ("GET", r"/registrationcode", "GetRegistrationCode", "get_registration_code"),
    ("POST", r"/cacertificate", "RegisterCACertificate", "register_ca_certificate"),
    ("PUT", r"/cacertificate/" + ID, "UpdateCACertificate", "update_ca_certificate"),
    ("GET", r"/cacertificate/" + ID, "DescribeCACertificate", "describe_ca_certificate"),
    ("POST", r"/certificate/register", "RegisterCertificate", "register_certificate"),
    ("POST", r"/certificate/register-no-ca", "RegisterCertificateWithoutCA", "register_certificate_without_ca"),
    ("GET", r"/certificates/" + ID, "DescribeCertificate", "describe_certificate"),
    ("PUT", r"/certificates/" + ID, "UpdateCertificate", "update_certificate"),
    ("GET", r"/certificates", "ListCertificates", "list_certificates"),
    ("POST", r"/things/(?P<name>[^/]+)", "CreateThing", "create_thing"),
    ("PUT", r"/things/(?P<name>[^/]+)/principals", "AttachThingPrincipal", "attach_thing_principal"),
    ("PUT", r"/target-policies/(?P<name>[^/]+)", "AttachPolicy", "attach_policy"),
]
ROUTES = [(m, re.compile(p), op, fn) for m, p, op, fn in ROUTES]


class Fake:
    def __init__(self, cfg):
        self.cfg = cfg
        self.registry = Registry(cfg)
        self.rng = random.Random(cfg.seed)
        self.rng_lock = threading.Lock()
        self.log_lock = threading.Lock()
        self.calls = []
        self.started = time.monotonic()
        rates = dict(DEFAULT_RATES)
        bursts = {}
        for item in filter(None, (cfg.rates or "").split(",")):
            op, _, value = item.partition("=")
            rate, _, burst = value.partition(":")
            rates[op.strip()] = float(rate)
            if burst:
                bursts[op.strip()] = float(burst)
        rates = {op: r * cfg.rate_scale for op, r in rates.items()}
        self.buckets = {op: TokenBucket(r, bursts.get(op, max(1.0, r))) for op, r in rates.items()}
        self.bucket_lock = threading.Lock()

    def roll(self, p):
        if p <= 0:
            return False
        with self.rng_lock:
            return self.rng.random() < p

    def log(self, **entry):
        with self.log_lock:
            entry["seq"] = len(self.calls) + 1
            entry["t"] = round(time.monotonic() - self.started, 4)
            self.calls.append(entry)

    def dump_calls(self):
        with self.log_lock:
            return list(self.calls)


def make_handler(fake):
    cfg = fake.cfg

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet: the call log is the record
            pass

        def answer(self, status, payload, error_code=None):
            body = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            if error_code:
                self.send_header("x-amzn-ErrorType", f"{error_code}:http://internal.amazon.com/coral/com.amazonaws.iot/")
            self.end_headers()
            self.wfile.write(body)

        def error(self, e):
            self.answer(HTTP_STATUS.get(e.code, 400), dict({"message": e.message}, **e.extra), e.code)

        def handle_any(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            raw_path, _, raw_query = self.path.partition("?")
            if raw_path.startswith("/__fake/"):
                if raw_path == "/__fake/calls":
                    since = urllib.parse.parse_qs(raw_query).get("since", ["0"])[0]
                    return self.answer(200, fake.dump_calls()[int(since) if since.isdigit() else 0:])
                if raw_path == "/__fake/state":
                    return self.answer(200, fake.registry.state())
                return self.answer(404, {"message": "no such fake endpoint"})
            route = None
            for method, pattern, op, fn in ROUTES:
                m = pattern.fullmatch(raw_path)
                if method == self.command and m:
                    route = (op, fn, {k: urllib.parse.unquote(v) for k, v in m.groupdict().items()})
                    break
            if route is None:
                fake.log(operation=None, method=self.command, path=raw_path, http=404, error="UnknownOperationException")
                return self.error(ApiError("UnknownOperationException", f"no operation {self.command} {raw_path}"))
            op, fn, params = route
            entry = {"operation": op, "resource": params.get("id") or params.get("name"), "fault": None,
                     "peer_port": self.client_address[1],
                     "certificate": call_certificate(op, params, self.headers, body)}
            bad = verify_sigv4(cfg, self.command, raw_path, raw_query, self.headers, body)
            if bad is not None:
                fake.log(**entry, http=HTTP_STATUS.get(bad.code, 403), error=bad.code, signature="invalid")
                return self.error(bad)
            if cfg.latency_ms > 0:
                time.sleep(cfg.latency_ms / 1000.0)
            bucket = fake.buckets.get(op)
            with fake.bucket_lock:
                allowed = bucket is None or cfg.no_rate_limits or bucket.take()
            if not allowed:
                fake.log(**dict(entry, fault="throttle"), http=400, error="ThrottlingException")
                return self.error(ApiError("ThrottlingException", "Rate exceeded"))
            faulty = not cfg.fault_ops or op in cfg.fault_ops
            if faulty and fake.roll(cfg.fault_timeout):
                fake.log(**dict(entry, fault="timeout"), http=None, error=None)
                time.sleep(cfg.timeout_seconds)
                self.close_connection = True
                return
            if faulty and fake.roll(cfg.fault_5xx):
                code = "ServiceUnavailableException" if fake.roll(0.5) else "InternalFailureException"
                fake.log(**dict(entry, fault="5xx"), http=HTTP_STATUS[code], error=code)
                return self.error(ApiError(code, "Service is unavailable (fake fault before the effect)"))
            query = {}
            for part in filter(None, raw_query.split("&")):
                k, _, v = part.partition("=")
                query[urllib.parse.unquote(k)] = urllib.parse.unquote(v)
            try:
                doc = json.loads(body) if body else {}
                if not isinstance(doc, dict):
                    raise ValueError
            except ValueError:
                fake.log(**entry, http=400, error="SerializationException")
                return self.answer(400, {"message": "the body is not a JSON object"}, "SerializationException")
            try:
                status, payload = getattr(fake.registry, fn)(params, query, self.headers, doc)
            except ApiError as e:
                fake.log(**dict(entry, resource=entry["resource"] or e.extra.get("resourceId")),
                         http=HTTP_STATUS.get(e.code, 400), error=e.code)
                return self.error(e)
            if payload and "certificateId" in payload:
                entry["resource"] = payload["certificateId"]
            if faulty and fake.roll(cfg.fault_5xx_after):
                fake.log(**dict(entry, fault="5xx-after"), http=500, error="InternalFailureException")
                return self.error(ApiError("InternalFailureException", "Internal failure (fake fault after the effect)"))
            fake.log(**entry, http=status, error=None)
            self.answer(status, payload)

        do_GET = do_POST = do_PUT = do_DELETE = handle_any

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", help="write the port chosen here once listening")
    ap.add_argument("--access-key", required=True)
    ap.add_argument("--secret-key", required=True)
    ap.add_argument("--session-token", default="")
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--account", default="123456789012")
    ap.add_argument("--policies", default="factory-device", help="policies that exist, comma-separated")
    ap.add_argument("--rates", default="", help="Operation=rate[:burst],... (requests/s); others: AWS's defaults")
    ap.add_argument("--rate-scale", type=float, default=1.0,
                    help="multiply every operation's rate (AWS's defaults and --rates) by this, e.g. 10")
    ap.add_argument("--no-rate-limits", action="store_true")
    ap.add_argument("--latency-ms", type=float, default=0)
    ap.add_argument("--fault-5xx", type=float, default=0, help="fraction answered 5xx before the effect")
    ap.add_argument("--fault-5xx-after", type=float, default=0, help="fraction answered 5xx after the effect")
    ap.add_argument("--fault-timeout", type=float, default=0, help="fraction never answered (connection closed)")
    ap.add_argument("--timeout-seconds", type=float, default=30)
    ap.add_argument("--fault-ops", default="", help="faults only for these operations, comma-separated (default all)")
    ap.add_argument("--reject-cn", default="", help="regex: device certificates with a matching CN are refused")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--call-log", help="write the call log here (JSON) at exit")
    cfg = ap.parse_args()
    cfg.policies = [p for p in cfg.policies.split(",") if p]
    cfg.fault_ops = set(o for o in cfg.fault_ops.split(",") if o)

    fake = Fake(cfg)
    server = ThreadingHTTPServer(("127.0.0.1", cfg.port), make_handler(fake))
    server.daemon_threads = True
    port = server.server_address[1]
    if cfg.port_file:
        with open(cfg.port_file + ".tmp", "w") as f:
            f.write(str(port))
        os.rename(cfg.port_file + ".tmp", cfg.port_file)
    print(f"fake-iot listening on 127.0.0.1:{port}", flush=True)

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.05)
    finally:
        if cfg.call_log:
            with open(cfg.call_log, "w") as f:
                json.dump(fake.dump_calls(), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
