#!/usr/bin/python3
"""registration_e2e_test: every certificate issued under a registering profile is registered exactly once with
each AWS IoT target, through faults, throttling and two SIGKILLs of the server (issue 10, "Tests").

Two fake AWS IoT accounts (fake_iot.py: SigV4 checked, per-operation throttling, 5 % injected 5xx — 4 % before
the effect, 1 % after it —, 50 ms latency) are the targets "main" and "second" of the real linesign-server
(development-mode SoftHSM2 token and SQLite in a temporary directory). The device profile registers without the CA
(SNI_ONLY), names each thing after the certificate's serial and attaches a policy. N certificates are issued with
linesign-bench and one more, CN=REJECT-ME, which both fakes refuse (CertificateValidationException, permanent).
The server is killed with SIGKILL at about a third and two thirds of the registrations, and restarted. Then,
from the fakes' registries and call logs:
- every listed certificate is registered in each fake, ACTIVE, attached to its thing and to the policy;
- no DescribeCertificate except one per 409 on a registration (none on the happy path);
- no successful step repeated, except steps whose success was answered before a kill and committed by nobody
  (at-least-once across a kill is unavoidable: AWS has no idempotency token). Those are counted per kill, over
  both targets, and must be at most iot.max_in_flight (each registration in flight has at most one AWS call
  outstanding); the numbers are printed;
- the rejected certificate is refused once per fake (again only across a kill), never retried after, and an
  IOT_FAILED event names it with AWS's code;
- no request had a bad signature, and the server stops cleanly without having logged a secret.

Usage: registration_e2e_test.py SERVER CLIENT BENCH [--count N] [--rate-scale F] [--latency-ms MS]
The ctest registration scales the fakes' quotas tenfold (--rate-scale 10) so 2,000 certificates finish within the
test's time; the same run at AWS's default quotas is `--rate-scale 1` (about 4 minutes: bench/README.md).
Exits 1 at the first failed assertion, saying what.
"""

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time

import iot_harness as h
import fake_iot

FAILURES = []


def check(ok, what):
    if not ok:
        FAILURES.append(what)
        h.log("FAIL:", what[:4000])
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("server")
    ap.add_argument("client")
    ap.add_argument("bench")
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--rate-scale", type=float, default=10)
    ap.add_argument("--latency-ms", type=float, default=50)
    ap.add_argument("--max-in-flight", type=int, default=48,
                    help="iot.max_in_flight: registrations worked on at once, each with at most one AWS call "
                         "outstanding — the bound on the steps a kill can catch between AWS's answer and the commit")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    # SIGTERM (a timeout) ends the run through the clean-up below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))

    tmp = tempfile.mkdtemp(prefix="iot-registration-e2e-")
    fakes, server = [], None
    try:
        fake_args = ["--rate-scale", str(args.rate_scale), "--latency-ms", str(args.latency_ms),
                     "--fault-5xx", "0.04", "--fault-5xx-after", "0.01", "--reject-cn", "REJECT-ME"]
        fakes = [h.Fake(tmp, "main", fake_args + ["--seed", "1"]),
                 h.Fake(tmp, "second", fake_args + ["--seed", "2"])]
        dev = os.path.join(tmp, "dev")
        config = h.prepare_dev_dir(args.server, dev, tmp)
        # linesign's ceilings: 90 % of each fake quota, as the defaults are of AWS's.
        rates = {op: round(r * args.rate_scale * 0.9, 3) for op, r in fake_iot.DEFAULT_RATES.items()}
        path = h.configure(dev, config, fakes, rates,
                           {"targets": ["main", "second"], "register": "without_ca", "thing_name": "{serial}",
                            "policy": h.POLICY},
                           # A killed server's leases hold its registrations until they expire: short ones,
                           # so the restarted server resumes them soon (its token waits stay far below 10 s at
                           # these rates; a wait longer than the lease lets a second claim run the same item).
                           {"max_in_flight": args.max_in_flight, "retry_base_ms": 200, "retry_max_ms": 5000,
                            "lease_seconds": 10})
        server = h.Server(args.server, path, tmp, h.server_env(tmp))
        server.start()
        started = time.monotonic()
        summary = h.issue(args.bench, server.address, os.path.join(dev, "station"), args.count)
        check(summary.get("errors", 0) == 0 and summary.get("certificates") == args.count,
              f"linesign-bench issued {summary}")
        rejected_pem = h.sign_one(args.client, server.address, os.path.join(dev, "station"), tmp, "REJECT-ME")
        rejected_serial = h.norm_serial(h.serial_of_pem(rejected_pem))
        rejected_id = fake_iot._pem_certificate_id(rejected_pem)
        h.log(f"issued {args.count} + 1 certificates in {time.monotonic() - started:.1f} s")

        # Two SIGKILLs part-way through the registrations, each followed by a restart.
        boundaries = {f.name: [] for f in fakes}
        for fraction in (1 / 3, 2 / 3):
            h.wait_for(lambda: h.complete_count(fakes[0]) >= fraction * args.count, 300,
                       f"{fraction:.0%} of the registrations with 'main'", interval=0.2)
            server.kill()
            time.sleep(2 * args.latency_ms / 1000 + 0.5)  # the killed process's requests in flight reach the log
            for f in fakes:
                boundaries[f.name].append(len(f.fetch_calls()))
            h.log("complete before the restart:", {f.name: h.complete_count(f) for f in fakes})
            server.start()

        def all_done():
            return all(h.complete_count(f) >= args.count for f in fakes)

        h.wait_for(all_done, 600, "every certificate registered with both targets", interval=0.5)
        h.log(f"all registered {time.monotonic() - started:.1f} s after the first issuance")
        # The rejected certificate's failure is reported (IOT_FAILED) once per target.
        def failed_events():
            return [e for e in h.events(args.client, server.address, os.path.join(dev, "admin"))
                    if e.get("type") == "IOT_FAILED" and h.norm_serial(e.get("serial_hex", "")) == rejected_serial]

        try:
            failures = h.wait_for(lambda: len(failed_events()) >= 2 and failed_events(), 120,
                                  "IOT_FAILED for the rejected certificate in both targets", interval=1)
        except RuntimeError as e:
            failures = []
            check(False, str(e))
        for e in failures:
            check("CertificateValidationException" in e.get("data", ""),
                  f"IOT_FAILED does not give AWS's code: {e}")
        time.sleep(1)  # anything still retrying the rejected certificate would show now

        serials = [h.norm_serial(s) for s in h.list_serials(args.client, server.address, os.path.join(dev, "admin"))]
        check(len(serials) == args.count + 1, f"linesign list shows {len(serials)} certificates, not {args.count + 1}")
        expected = [s for s in serials if s != rejected_serial]
        report, repeats_per_kill = {}, {}
        for f in fakes:
            calls, state = f.fetch_calls(), f.state()
            ids = h.certificate_ids_by_serial(state)
            things = h.thing_lookup(state)
            missing_serials = [s for s in expected if s not in ids]
            check(not missing_serials, f"{f.name}: {len(missing_serials)} certificates never registered, e.g. "
                                       f"{missing_serials[:5]}")
            check(rejected_serial not in ids, f"{f.name}: the rejected certificate is registered")
            check(len(state["certificates"]) == len(expected),
                  f"{f.name}: {len(state['certificates'])} certificates registered, not {len(expected)}")
            serial_of_id = {cid: s for s, cid in ids.items()}
            incomplete = fake_iot.incomplete_registrations(
                state, [ids[s] for s in expected if s in ids],
                lambda cid: things.get(serial_of_id[cid], serial_of_id[cid]), h.POLICY)
            check(not incomplete, f"{f.name}: {len(incomplete)} incomplete: {list(incomplete.items())[:5]}")
            # Registered exactly once: one registration call per certificate took effect (answered 2xx, or 5xx
            # after the effect: then the retry met a 409 and one DescribeCertificate confirmed it).
            registered = {}
            for c in calls:
                if c.get("operation") in fake_iot.REGISTER_OPERATIONS and fake_iot.call_took_effect(c):
                    registered[c["certificate"]] = registered.get(c["certificate"], 0) + 1
            check(all(n == 1 for n in registered.values()) and len(registered) == len(expected),
                  f"{f.name}: registrations that took effect per certificate {sorted(set(registered.values()))} "
                  f"for {len(registered)} certificates")
            check(not any(c.get("operation") == "RegisterCertificate" for c in calls),
                  f"{f.name}: RegisterCertificate (with the CA) called for a without_ca profile")
            bad_describes = fake_iot.describes_without_conflict(calls)
            check(not bad_describes, f"{f.name}: {len(bad_describes)} DescribeCertificate without a 409 before, "
                                     f"e.g. {bad_describes[:3]}")
            per_kill, unexplained = h.explain_repeats(calls, boundaries[f.name])
            check(not unexplained, f"{f.name}: {len(unexplained)} successful steps repeated with no kill between, "
                                   f"e.g. {unexplained[:5]}")
            for kill, n in per_kill.items():
                repeats_per_kill[kill] = repeats_per_kill.get(kill, 0) + n
            check(not any(c.get("signature") == "invalid" for c in calls), f"{f.name}: a request was badly signed")
            # The rejected certificate: refused, then left alone.
            refusals = [c["seq"] for c in calls if c.get("certificate") == rejected_id
                        and c.get("error") == "CertificateValidationException"]
            after = [c for c in calls if c.get("certificate") == rejected_id and refusals and c["seq"] > refusals[-1]]
            check(len(refusals) >= 1, f"{f.name}: the rejected certificate was never refused")
            check(all(any(a <= b < c for b in boundaries[f.name]) for a, c in zip(refusals, refusals[1:])),
                  f"{f.name}: the rejected certificate was refused {len(refusals)} times with no kill between")
            check(not after, f"{f.name}: {len(after)} calls for the rejected certificate after its refusal")
            summary = fake_iot.operation_summary(calls)
            report[f.name] = {"repeats_per_kill": {f"kill {k + 1}": n for k, n in sorted(per_kill.items())},
                              "409_then_describe": sum(1 for c in calls if c.get("operation") == "DescribeCertificate"),
                              "operations": summary,
                              "calls_per_certificate": h.calls_per_certificate(summary, len(expected))}
        # Each worker has at most one AWS call outstanding: a kill catches at most max_in_flight steps answered
        # by AWS and not yet committed, over all targets.
        for kill, n in sorted(repeats_per_kill.items()):
            h.log(f"kill {kill + 1}: {n} successful steps repeated after the restart (bound: {args.max_in_flight})")
            check(n <= args.max_in_flight,
                  f"{n} steps repeated across kill {kill + 1}, more than the {args.max_in_flight} in flight")
        for name, r in report.items():
            h.log(f"{name}: repeats per kill {r['repeats_per_kill']}, DescribeCertificate {r['409_then_describe']}")
            for op, s in sorted(r["operations"].items()):
                h.log(f"  {op:30s} {s} calls/cert {r['calls_per_certificate'][op]}")
        code = server.stop()
        output = server.output()
        check(code == 0, f"the server's clean stop exited {code}")
        for hidden in (h.SECRET, h.TOKEN):
            check(hidden not in output, "the server logged a secret")
    except Exception as e:  # noqa: BLE001 - any failure of the harness is a test failure, with its reason
        check(False, f"{type(e).__name__}: {e}")
        if server is not None:
            h.log("server output (last 3000 characters):", server.output()[-3000:])
    finally:
        if server is not None:
            server.stop()
        for f in fakes:
            f.stop()
        if args.keep or FAILURES:
            h.log("kept", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if FAILURES:
        print(f"FAIL: {len(FAILURES)} assertion(s) failed", flush=True)
        return 1
    print("PASS", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
