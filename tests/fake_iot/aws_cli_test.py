#!/usr/bin/python3
"""aws_cli_test: the real AWS CLI (Debian's awscli) against fake_iot.py, through the seeds' commands.

It proves the fake is faithful where it matters to linesign: the CLI's own SigV4 signatures (with a session
token) verify, a wrong secret is refused, the CLI parses every answer and every error code the fake sends (409
ResourceAlreadyExists, CertificateState, RegistrationCode/CertificateValidation, a 400 ThrottlingException), the
certificate id is the SHA-256 of the DER, and ListCertificates pages. Usage: aws_cli_test.py AWS_CLI FAKE_IOT_PY.
Exits 1 at the first difference, saying which.
"""

import concurrent.futures
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ACCESS_KEY = "AKIDFAKEIOTCLITEST01"
SECRET = "fakeSecretKeyForTheCliTest/K7MDENG+bPxRfiCY"
TOKEN = "FQoGZXIvYXdzEFAKESESSIONTOKENforTheCliTest=="


def fail(msg):
    print("FAIL:", msg, flush=True)
    sys.exit(1)


def make_cert(subject_cn, issuer_cn, key, signing_key, ca, days=30):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    cert = b.sign(signing_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), cert.public_bytes(serialization.Encoding.DER)


def main():
    aws, fake_py = sys.argv[1], sys.argv[2]
    if not os.access(aws, os.X_OK):
        fail(f"the AWS CLI '{aws}' is not installed (Debian package awscli; scripts/install-deps.sh installs it)")
    tmp = tempfile.mkdtemp(prefix="fake-iot-cli-")
    port_file = os.path.join(tmp, "port")
    fake = subprocess.Popen(
        ["/usr/bin/python3", fake_py, "--port-file", port_file, "--access-key", ACCESS_KEY, "--secret-key", SECRET,
         "--session-token", TOKEN, "--region", "eu-west-1", "--rates", "DescribeCACertificate=0.001:1",
         "--call-log", os.path.join(tmp, "calls.json")])
    try:
        for _ in range(600):
            if os.path.exists(port_file) or fake.poll() is not None:
                break
            time.sleep(0.05)
        if not os.path.exists(port_file):
            fail("fake_iot.py did not start")
        endpoint = f"http://127.0.0.1:{open(port_file).read().strip()}"
        run_steps(aws, endpoint, tmp)
    finally:
        fake.terminate()
        fake.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    print("PASS", flush=True)
    return 0


def run_steps(aws, endpoint, tmp):
    env = {
        "PATH": "/usr/bin:/bin", "HOME": tmp, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": TOKEN, "AWS_DEFAULT_REGION": "eu-west-1", "AWS_MAX_ATTEMPTS": "1",
        "AWS_RETRY_MODE": "standard", "AWS_PAGER": "", "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.path.join(tmp, "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": os.path.join(tmp, "no-credentials"),
    }

    def cli(*args, expect_error=None, environ=None):
        cmd = [aws, "--endpoint-url", endpoint, "--output", "json", "iot", *args]
        p = subprocess.run(cmd, env=environ or env, capture_output=True, text=True, timeout=120)
        shown = " ".join(a if len(a) < 60 else a[:57] + "..." for a in args)
        if expect_error:
            if p.returncode == 0:
                fail(f"aws iot {shown}: succeeded, expected {expect_error}")
            if f"({expect_error})" not in p.stderr:
                fail(f"aws iot {shown}: expected ({expect_error}) in stderr, got: {p.stderr.strip()}")
            print(f"ok   aws iot {shown} -> {expect_error}", flush=True)
            return None
        if p.returncode != 0:
            fail(f"aws iot {shown}: exit {p.returncode}: {p.stderr.strip()}")
        print(f"ok   aws iot {shown}", flush=True)
        return json.loads(p.stdout) if p.stdout.strip() else {}

    def write(name, text):
        path = os.path.join(tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return "file://" + path

    # Each `aws` start costs about a second of CPU, so independent commands run side by side, in phases; a
    # chain inside a phase keeps its order.
    def phase(*chains):
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(chains)) as pool:
            return [f.result() for f in [pool.submit(c) for c in chains]]

    wrong = dict(env, AWS_SECRET_ACCESS_KEY="not" + SECRET)
    no_token = {k: v for k, v in env.items() if k != "AWS_SESSION_TOKEN"}
    code, _, _ = phase(
        lambda: cli("get-registration-code")["registrationCode"],
        lambda: cli("get-registration-code", expect_error="InvalidSignatureException", environ=wrong),
        lambda: cli("get-registration-code", expect_error="UnrecognizedClientException", environ=no_token))
    if len(code) != 64:
        fail(f"registration code {code!r} is not 64 hex digits")

    ca_key, other_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_pem, ca_der = make_cert("Acme Factory CA", "Acme Factory CA", ca_key, ca_key, ca=True, days=365)
    ver_pem, _ = make_cert(code, "Acme Factory CA", ec.generate_private_key(ec.SECP256R1()), ca_key, ca=False)
    forged_pem, _ = make_cert(code, "Acme Factory CA", ec.generate_private_key(ec.SECP256R1()), other_key, ca=False)
    wrong_cn_pem, _ = make_cert("not-the-code", "Acme Factory CA", ec.generate_private_key(ec.SECP256R1()), ca_key,
                                ca=False)
    ca_file, ver_file = write("ca.pem", ca_pem), write("ver.pem", ver_pem)
    phase(
        lambda: cli("register-ca-certificate", "--ca-certificate", ca_file, "--verification-certificate",
                    write("forged.pem", forged_pem), "--set-as-active",
                    expect_error="CertificateValidationException"),
        lambda: cli("register-ca-certificate", "--ca-certificate", ca_file, "--verification-certificate",
                    write("wrongcn.pem", wrong_cn_pem), "--set-as-active",
                    expect_error="RegistrationCodeValidationException"))
    ca = cli("register-ca-certificate", "--ca-certificate", ca_file, "--verification-certificate", ver_file,
             "--set-as-active", "--certificate-mode", "DEFAULT")
    if ca["certificateId"] != hashlib.sha256(ca_der).hexdigest():
        fail(f"CA certificate id {ca['certificateId']} is not the SHA-256 of its DER")
    if not ca["certificateArn"].endswith(":cacert/" + ca["certificateId"]):
        fail(f"CA ARN {ca['certificateArn']}")

    dev_pem, dev_der = make_cert("DEVICE000001", "Acme Factory CA", ec.generate_private_key(ec.SECP256R1()), ca_key,
                                 ca=False)
    dev_file = write("dev.pem", dev_pem)
    sni_pem, sni_der = make_cert("DEVICE000002", "Acme Factory CA", ec.generate_private_key(ec.SECP256R1()), ca_key,
                                 ca=False)
    stranger_pem, _ = make_cert("DEVICE-STRANGER", "Acme Factory CA", ec.generate_private_key(ec.SECP256R1()),
                                other_key, ca=False)

    def describe_ca_then_throttled():
        described = cli("describe-ca-certificate", "--certificate-id", ca["certificateId"])
        if described["certificateDescription"]["status"] != "ACTIVE":
            fail(f"CA status {described['certificateDescription']['status']}, expected ACTIVE")
        # DescribeCACertificate's rate here is 0.001/s with a burst of 1: the second call is throttled (HTTP 400).
        cli("describe-ca-certificate", "--certificate-id", ca["certificateId"], expect_error="ThrottlingException")

    def inactive_ca_refuses_then_device_flow():
        cli("update-ca-certificate", "--certificate-id", ca["certificateId"], "--new-status", "INACTIVE")
        cli("register-certificate", "--certificate-pem", dev_file, "--ca-certificate-pem", ca_file,
            "--set-as-active", expect_error="CertificateStateException")
        cli("update-ca-certificate", "--certificate-id", ca["certificateId"], "--new-status", "ACTIVE")
        dev = cli("register-certificate", "--certificate-pem", dev_file, "--ca-certificate-pem", ca_file,
                  "--set-as-active")
        if dev["certificateId"] != hashlib.sha256(dev_der).hexdigest():
            fail("device certificate id is not the SHA-256 of its DER")
        return dev

    def sni_registration():
        sni = cli("register-certificate-without-ca", "--certificate-pem", write("sni.pem", sni_pem), "--status",
                  "ACTIVE")
        if sni["certificateId"] != hashlib.sha256(sni_der).hexdigest():
            fail("RegisterCertificateWithoutCA id is not the SHA-256 of the DER")
        return sni

    def things():
        thing = cli("create-thing", "--thing-name", "DEVICE000001", "--attribute-payload",
                    '{"attributes":{"line":"3"}}')
        again = cli("create-thing", "--thing-name", "DEVICE000001", "--attribute-payload",
                    '{"attributes":{"line":"3"}}')
        if again["thingId"] != thing["thingId"]:
            fail("CreateThing with the same attributes answered another thing")
        cli("create-thing", "--thing-name", "DEVICE000001", "--attribute-payload", '{"attributes":{"line":"4"}}',
            expect_error="ResourceAlreadyExistsException")

    dev, sni, _, _, _ = phase(
        inactive_ca_refuses_then_device_flow, sni_registration, things,
        lambda: cli("register-ca-certificate", "--ca-certificate", ca_file, "--verification-certificate", ver_file,
                    expect_error="ResourceAlreadyExistsException"),
        lambda: cli("register-certificate", "--certificate-pem", write("stranger.pem", stranger_pem),
                    "--ca-certificate-pem", ca_file, expect_error="CertificateValidationException"))

    def describe_and_revoke():
        d = cli("describe-certificate", "--certificate-id", dev["certificateId"])["certificateDescription"]
        if d["status"] != "ACTIVE" or d["caCertificateId"] != ca["certificateId"] or d["certificatePem"] != dev_pem:
            fail(f"DescribeCertificate answered {d}")
        cli("update-certificate", "--certificate-id", sni["certificateId"], "--new-status", "REVOKED")

    def page_through():
        # This CLI turns its own paging off when --page-size is given, so the marker is passed back by hand.
        first = cli("list-certificates", "--page-size", "1")
        if "nextMarker" not in first:
            fail("ListCertificates with 2 certificates and pageSize 1 answered no nextMarker")
        second = cli("list-certificates", "--page-size", "1", "--marker", first["nextMarker"])
        ids = sorted(c["certificateId"] for c in first["certificates"] + second["certificates"])
        if ids != sorted([dev["certificateId"], sni["certificateId"]]) or "nextMarker" in second:
            fail(f"ListCertificates across pages answered {ids}")

    phase(
        lambda: cli("attach-thing-principal", "--thing-name", "DEVICE000001", "--principal", dev["certificateArn"]),
        lambda: cli("attach-policy", "--policy-name", "factory-device", "--target", dev["certificateArn"]),
        lambda: cli("attach-policy", "--policy-name", "no-such-policy", "--target", dev["certificateArn"],
                    expect_error="ResourceNotFoundException"),
        lambda: cli("describe-certificate", "--certificate-id", "0" * 64, expect_error="ResourceNotFoundException"),
        describe_and_revoke, page_through, describe_ca_then_throttled)

    with urllib.request.urlopen(endpoint + "/__fake/calls", timeout=30) as r:
        calls = json.load(r)
    invalid = [c for c in calls if c.get("signature") == "invalid"]
    if len(invalid) != 2:
        fail(f"the fake refused {len(invalid)} signatures, expected exactly the 2 made wrong on purpose: {invalid}")
    with urllib.request.urlopen(endpoint + "/__fake/state", timeout=30) as r:
        state = json.load(r)
    thing_state = [t for t in state["things"] if t["thingName"] == "DEVICE000001"][0]
    if thing_state["principals"] != [dev["certificateArn"]]:
        fail(f"thing principals {thing_state['principals']}")
    if state["policies"]["factory-device"] != [dev["certificateArn"]]:
        fail(f"policy targets {state['policies']['factory-device']}")


if __name__ == "__main__":
    sys.exit(main())
