#!/usr/bin/python3
"""iot_bench: AWS IoT device-registration throughput of linesign against the fake AWS IoT (issue 10, "Benchmark").

For each quota scale (default: 1 = AWS's default quotas, then 10 = raised tenfold): a fresh fake account
(tests/fake_iot/fake_iot.py, --latency-ms of latency on every call, no injected faults unless asked), a fresh
linesign-server (development-mode SoftHSM2 token, SQLite) whose device profile registers with it (with_ca: the CA
is registered first with `linesign iot register-ca --mode default`; thing named by serial; a policy), and a
backlog of --count certificates issued at once with linesign-bench. It reports, from the fake's call log:
- completion rate: certificates fully registered (last step answered) per second, from the first registration
  call to the last certificate's last step, against the bottleneck operation's quota (the registration call,
  10/s at AWS's defaults: every certificate needs one), and the ratio (issue 10's target: >= 90 %);
- each operation's measured rate (successful calls over its own active span), calls, throttles, faults;
- calls per registered certificate by operation.
linesign's own ceilings are its defaults (about 90 % of AWS's default quotas) times the scale, unless
--ceiling-fraction says otherwise (e.g. 1.0: the quotas themselves, leaving the adaptive rate to find the limit).

  bench/iot_bench.py --build build                       # 3,000 certificates, 100 ms, quotas x1 then x10
  bench/iot_bench.py --build build --count 10000 --scales 1   # the issue's "done when" run (about 19 minutes)
  bench/iot_bench.py --build build --json results.json   # also write the numbers as JSON

Not a test: it asserts nothing but prints the numbers. The machine it runs on should be quiet; say so when not.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fake_iot"))
import fake_iot  # noqa: E402
import iot_harness as h  # noqa: E402

# linesign's default ceilings (server/iot/iot_config.cc): about 90 % of AWS's default quotas.
LINESIGN_DEFAULT_FRACTION = 0.9


def run_once(args, scale):
    tmp = tempfile.mkdtemp(prefix=f"iot-bench-x{scale:g}-")
    fake, server = None, None
    try:
        fake_args = ["--rate-scale", str(scale), "--latency-ms", str(args.latency_ms)]
        if args.fault_5xx:
            fake_args += ["--fault-5xx", str(args.fault_5xx)]
        fake = h.Fake(tmp, "main", fake_args)
        dev = os.path.join(tmp, "dev")
        config = h.prepare_dev_dir(args.server, dev, tmp)
        fraction = args.ceiling_fraction or LINESIGN_DEFAULT_FRACTION
        rates = {op: round(r * scale * fraction, 3) for op, r in fake_iot.DEFAULT_RATES.items()}
        register = "with_ca" if args.mode == "with_ca" else "without_ca"
        path = h.configure(dev, config, [fake], rates,
                           {"targets": ["main"], "register": register, "thing_name": "{serial}",
                            "policy": h.POLICY}, args.iot_extra)
        server = h.Server(args.server, path, tmp, h.server_env(tmp))
        server.start()
        admin = os.path.join(dev, "admin")
        if register == "with_ca":
            h.run([args.client, "iot", "register-ca", "--server", server.address, "--tls-dir", admin, "--target",
                   "main", "--mode", "default"], timeout=120)
        t0 = time.monotonic()
        issued = h.issue(args.bench, server.address, os.path.join(dev, "station"), args.count)
        h.log(f"x{scale:g}: issued {issued['certificates']} certificates in {issued['seconds']:.1f} s")
        last_report = 0

        def done():
            nonlocal last_report
            n = h.complete_count(fake)
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                h.log(f"x{scale:g}: {n} / {args.count} registered")
            return n >= args.count

        h.wait_for(done, args.count / (10 * scale * 0.5) + 300, "every certificate registered", interval=0.5)
        wall = time.monotonic() - t0
        calls = fake.fetch_calls()
        if args.keep:
            with open(os.path.join(tmp, "calls.json"), "w") as f:
                json.dump(calls, f)
        device_calls = [c for c in calls if c.get("certificate") or c.get("operation") == "CreateThing"]
        first = min(c["t"] for c in device_calls if c["operation"] in fake_iot.REGISTER_OPERATIONS)
        last = max(c["t"] for c in device_calls if c["operation"] == "AttachPolicy" and fake_iot.call_succeeded(c))
        summary = fake_iot.operation_summary(device_calls)
        # Exactly those certificates, each registered, ACTIVE, attached to its thing (named by serial) and policy.
        state = fake.state()
        serials = {h.norm_serial(s) for s in h.list_serials(args.client, server.address, admin)}
        ids = h.certificate_ids_by_serial(state)
        serial_of_id = {cid: s for s, cid in ids.items()}
        things = h.thing_lookup(state)
        incomplete = fake_iot.incomplete_registrations(
            state, list(ids.values()), lambda cid: things.get(serial_of_id[cid], serial_of_id[cid]), h.POLICY)
        register_op = "RegisterCertificate" if register == "with_ca" else "RegisterCertificateWithoutCA"
        quota = fake_iot.DEFAULT_RATES[register_op] * scale
        rate = args.count / (last - first)
        result = {
            "scale": scale, "count": args.count, "latency_ms": args.latency_ms, "mode": register,
            "linesign_ceiling_fraction": fraction, "bottleneck": register_op, "bottleneck_quota_per_s": quota,
            "seconds_first_call_to_last_step": round(last - first, 2), "wall_seconds_from_issuance": round(wall, 2),
            "completion_per_s": round(rate, 2), "completion_vs_bottleneck": round(rate / quota, 3),
            "completion_vs_linesign_ceiling": round(rate / (quota * fraction), 3),
            "operations": summary, "calls_per_certificate": h.calls_per_certificate(summary, args.count),
            "throttles": sum(s["throttled"] for s in summary.values()),
            "issued": len(serials), "registered_in_aws": len(ids),
            "issued_and_registered_alike": set(ids) == serials, "incomplete": len(incomplete),
            "repeated_successful_steps": len(fake_iot.repeated_successful_steps(calls)),
            "describes_without_conflict": len(fake_iot.describes_without_conflict(calls)),
        }
        status = h.run([args.client, "iot", "status", "--server", server.address, "--tls-dir", admin],
                       timeout=60, check=False)
        if status.returncode == 0:
            result["linesign_iot_status"] = status.stdout
        return result
    finally:
        if server is not None:
            server.stop()
        if fake is not None:
            fake.stop()
        if args.keep:
            h.log(f"kept {tmp} (server-*.log, fake-main.log; the fake's call log is lost with it)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def print_result(r):
    print(f"\n== quotas x{r['scale']:g}: {r['count']} certificates, {r['mode']}, {r['latency_ms']:g} ms latency, "
          f"linesign ceilings {r['linesign_ceiling_fraction']:.0%} of the quotas")
    print(f"completion: {r['completion_per_s']}/s over {r['seconds_first_call_to_last_step']} s = "
          f"{r['completion_vs_bottleneck']:.1%} of the bottleneck ({r['bottleneck']} "
          f"{r['bottleneck_quota_per_s']:g}/s), {r['completion_vs_linesign_ceiling']:.1%} of linesign's ceiling; "
          f"throttles {r['throttles']}; repeated steps "
          f"{r['repeated_successful_steps']}; DescribeCertificate without a 409 {r['describes_without_conflict']}")
    print(f"issued {r['issued']}, registered in the fake {r['registered_in_aws']} (the same serials: "
          f"{r['issued_and_registered_alike']}), incomplete (not ACTIVE, thing or policy missing) {r['incomplete']}")
    print(f"{'operation':30s} {'calls':>7s} {'ok':>7s} {'throttled':>9s} {'5xx':>5s} {'refused':>7s} "
          f"{'ok/s':>8s} {'calls/cert':>10s}")
    for op, s in sorted(r["operations"].items()):
        print(f"{op:30s} {s['calls']:7d} {s['ok']:7d} {s['throttled']:9d} {s['5xx']:5d} {s['refused']:7d} "
              f"{s['rate_ok_per_s'] or 0:8.2f} {r['calls_per_certificate'][op]:10.3f}")
    if r.get("linesign_iot_status"):
        print("linesign iot status at the end:\n" + r["linesign_iot_status"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build", help="the build directory")
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--latency-ms", type=float, default=100)
    ap.add_argument("--scales", default="1,10", help="quota scales to run, comma-separated")
    ap.add_argument("--mode", choices=("with_ca", "without_ca"), default="with_ca")
    ap.add_argument("--ceiling-fraction", type=float, default=0,
                    help="linesign's ceilings as a fraction of the fake's quotas (default: linesign's own 0.9)")
    ap.add_argument("--fault-5xx", type=float, default=0, help="fraction of calls answered 5xx")
    ap.add_argument("--iot-extra", default="{}",
                    help='JSON merged into the server\'s iot: section, e.g. \'{"max_in_flight": 96}\'')
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--keep", action="store_true", help="keep each run's directory (server and fake logs)")
    args = ap.parse_args()
    args.server = os.path.join(args.build, "server", "linesign-server")
    args.client = os.path.join(args.build, "client", "linesign")
    args.bench = os.path.join(args.build, "bench", "linesign-bench")
    args.iot_extra = json.loads(args.iot_extra)
    results = []
    for scale in (float(s) for s in args.scales.split(",")):
        r = run_once(args, scale)
        print_result(r)
        results.append(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
