#!/usr/bin/python3
"""iot_harness: the real linesign-server (SoftHSM2 token and SQLite in a temporary directory, mTLS gRPC) registering
device certificates with fake AWS IoT control planes (fake_iot.py), for the end-to-end registration test
(registration_e2e_test.py) and the benchmark (bench/iot_bench.py).

Nothing here is production code. Every process it starts it ends by its own id.
"""

import ctypes
import datetime
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import yaml
from cryptography import x509

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fake_iot  # noqa: E402  (the call-log analysis functions)

ACCESS_KEY = "AKIDLINESIGNHARNESS1"
SECRET = "linesignHarnessSecret/K7MDENG+bPxRfiCYzzz"
TOKEN = "FQoGZXIvYXdzHARNESSsessionTOKEN0123456789=="
REGION = "us-east-1"
POLICY = "factory-device"


def _die_with_parent():
    """_die_with_parent: run in each child before exec: the kernel SIGKILLs it when the harness dies, however it
    dies (a ctest timeout kills only the harness), so no fake or server outlives a run."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def log(*args):
    print(datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3], *args, flush=True)


def wait_for(predicate, seconds, what, interval=0.05):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"timed out after {seconds} s waiting for {what}")


class Fake:
    """Fake: one fake_iot.py process (one AWS account and region) on a loopback port."""

    def __init__(self, tmp, name, args):
        self.name = name
        self.port_file = os.path.join(tmp, f"fake-{name}.port")
        self.output = open(os.path.join(tmp, f"fake-{name}.log"), "w")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_iot.py"),
             "--port-file", self.port_file, "--access-key", ACCESS_KEY, "--secret-key", SECRET,
             "--session-token", TOKEN, "--region", REGION, "--policies", POLICY, *args],
            stdout=self.output, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        wait_for(lambda: os.path.exists(self.port_file) or self.proc.poll() is not None, 30, f"fake {name}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"fake {name} exited with {self.proc.returncode}")
        self.endpoint = f"http://127.0.0.1:{open(self.port_file).read().strip()}"
        self.calls = []  # the call log as far as fetched

    def _get(self, path):
        with urllib.request.urlopen(self.endpoint + path, timeout=60) as r:
            return json.loads(r.read())

    def fetch_calls(self):
        """fetch_calls: brings self.calls up to date (incrementally) and returns it."""
        self.calls.extend(self._get(f"/__fake/calls?since={len(self.calls)}"))
        return self.calls

    def state(self):
        return self._get("/__fake/state")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.output.close()


class Server:
    """Server: linesign-server with a configuration file; start, SIGKILL and restart it."""

    def __init__(self, binary, config, tmp, env):
        self.binary, self.config, self.tmp, self.env = binary, config, tmp, env
        self.proc, self.address, self.starts, self.outputs = None, None, 0, []

    def start(self):
        self.starts += 1
        path = os.path.join(self.tmp, f"server-{self.starts}.log")
        self.outputs.append(path)
        out = open(path, "w")
        self.proc = subprocess.Popen([self.binary, "--config", self.config], stdout=out, stderr=subprocess.STDOUT,
                                     env=self.env, preexec_fn=_die_with_parent)
        out.close()

        def listening():
            if self.proc.poll() is not None:
                raise RuntimeError(f"linesign-server exited with {self.proc.returncode}:\n{open(path).read()}")
            for line in open(path):
                if line.startswith("linesign-server listening on "):
                    return line.split()[-1]
            return None

        self.address = wait_for(listening, 60, "linesign-server to listen")
        log(f"server start {self.starts}: pid {self.proc.pid} on {self.address}")

    def kill(self):
        """kill: SIGKILL, as a power cut would: nothing is flushed or finished."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        log(f"server pid {self.proc.pid} killed (SIGKILL)")

    def stop(self):
        """stop: SIGTERM and the exit code (a clean stop is 0)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -9

    def output(self):
        return "".join(open(p).read() for p in self.outputs)


def prepare_dev_dir(server_binary, dev_dir, tmp):
    """prepare_dev_dir: development mode's first start makes the SoftHSM2 token, the CA, the TLS credentials
    (DIR/station, DIR/admin) and DIR/config.yaml; the server is then stopped. Returns the configuration (dict)."""
    out_path = os.path.join(tmp, "server-dev.log")
    with open(out_path, "w") as out:
        proc = subprocess.Popen([server_binary, "--dev", dev_dir, "--listen", "127.0.0.1:0"], stdout=out,
                                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    try:
        wait_for(lambda: proc.poll() is not None or "listening on" in open(out_path).read(), 120,
                 "the development-mode server")
        if proc.poll() is not None:
            raise RuntimeError(f"linesign-server --dev failed:\n{open(out_path).read()}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    with open(os.path.join(dev_dir, "config.yaml")) as f:
        return yaml.safe_load(f)


def configure(dev_dir, config, fakes, target_rates, profile_iot, iot_extra=None):
    """configure: adds the fakes as iot.targets (named as the fakes) with `target_rates` and the device profile's
    `iot` section, writes DIR/iot-config.yaml and returns its path."""
    # Its own HTTP port: several servers (other tests) may run at once.
    config["http"] = dict(config.get("http") or {}, listen="127.0.0.1:0")
    config["iot"] = dict(iot_extra or {})
    config["iot"]["targets"] = [{"name": f.name, "region": REGION, "endpoint": f.endpoint, "rates": target_rates}
                                for f in fakes]
    config["profiles"]["device"]["iot"] = profile_iot
    path = os.path.join(dev_dir, "iot-config.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    return path


def server_env(tmp):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN,
                "AWS_SHARED_CREDENTIALS_FILE": os.path.join(tmp, "no-credentials"),
                "AWS_CONFIG_FILE": os.path.join(tmp, "no-config")})
    return env


def run(argv, timeout=300, check=True):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def issue(bench_binary, address, tls_dir, count):
    """issue: `count` certificates through linesign-bench (SignCsrStream); returns its JSON summary."""
    p = run([bench_binary, "--server", address, "--tls-dir", tls_dir, "--count", str(count), "--concurrency", "2",
             "--window", "64", "--pool", "64", "--verify-every", "0", "--json"], timeout=600)
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    return summary


def sign_one(client_binary, address, tls_dir, tmp, cn):
    """sign_one: one certificate for a fresh key with subject CN=`cn` through `linesign keygen` and `sign`;
    returns its PEM."""
    key, csr, cert = (os.path.join(tmp, f"{cn}.{ext}") for ext in ("key", "csr", "pem"))
    run([client_binary, "keygen", "--subject", f"/CN={cn}", "--key-out", key, "--csr-out", csr])
    run([client_binary, "sign", "--server", address, "--tls-dir", tls_dir, "--csr", csr, "--out", cert])
    return open(cert).read()


def list_serials(client_binary, address, admin_dir, profile="device"):
    """list_serials: the serials (lower-case hex) the server lists for `profile`, through `linesign list`."""
    p = run([client_binary, "list", "--server", address, "--tls-dir", admin_dir, "--profile", profile, "--all",
             "--page-size", "1000", "--json"], timeout=300)
    return [json.loads(line)["serial_hex"].lower() for line in p.stdout.splitlines() if line.strip()]


def events(client_binary, address, admin_dir):
    p = run([client_binary, "events", "--server", address, "--tls-dir", admin_dir, "--json"], timeout=300)
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


def serial_of_pem(pem):
    return format(x509.load_pem_x509_certificate(pem.encode()).serial_number, "x")


def certificate_ids_by_serial(state):
    """certificate_ids_by_serial: {serial (lower-case hex, no leading zeros): AWS certificate id} of the
    certificates registered with a fake."""
    return {serial_of_pem(c["certificatePem"]): c["certificateId"] for c in state["certificates"]}


def norm_serial(serial_hex):
    return serial_hex.lower().lstrip("0") or "0"


def thing_lookup(state):
    """thing_lookup: {normalised serial: thing name} (things are named by their certificate's serial)."""
    return {norm_serial(t["thingName"]): t["thingName"] for t in state["things"]}


def complete_count(fake):
    """complete_count: certificates whose last step (AttachPolicy) succeeded, from the call log."""
    return len({c.get("certificate") for c in fake.fetch_calls()
                if c.get("operation") == "AttachPolicy" and fake_iot.call_succeeded(c)})


def explain_repeats(calls, boundaries):
    """explain_repeats: splits repeated successful steps into those separated by a server kill (a success, the
    kill, the same success again: the step was in flight, its answer not yet committed) and the others.
    `boundaries` are call-log seqs recorded after each kill and before the restart. Returns
    ({kill index: count}, [unexplained (key, seqs)])."""
    per_kill, unexplained = {}, []
    for key, seqs in fake_iot.repeated_successful_steps(calls).items():
        for a, b in zip(seqs, seqs[1:]):
            kills = [i for i, boundary in enumerate(boundaries) if a <= boundary < b]
            if kills:
                per_kill[kills[0]] = per_kill.get(kills[0], 0) + 1
            else:
                unexplained.append((key, seqs))
    return per_kill, unexplained


def calls_per_certificate(summary, certificates):
    return {op: round(s["calls"] / max(1, certificates), 3) for op, s in sorted(summary.items())}
