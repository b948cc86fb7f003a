// linesign-bench: an end-to-end load generator against a running linesign server.
//
// Pre-generates a pool of CSRs, then drives SignCsrStream (default) or unary SignCsr from several connections
// until --count certificates or --duration seconds, printing a progress line each second and a summary:
// certificates/s, latency percentiles, errors by status code (--json: one JSON object). Every --verify-every-th
// certificate is checked against the issuing CA's key from GetCaChain.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>

#include <openssl/rand.h>
#include <sys/resource.h>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/connect.h"
#include "client/keygen.h"
#include "common/openssl_util.h"
#include "linesign/v1/ca.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;

// CpuSeconds is the user + system CPU time this process has used so far.
double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}
using linesign::v1::CertificateAuthority;

struct Shared {
  std::vector<std::string> csrs;
  int64_t count = 0;              // stop after this many answers (0: use the deadline)
  Clock::time_point deadline;
  std::atomic<int64_t> sent{0};
  std::atomic<int64_t> done{0};
  std::atomic<int64_t> verified{0};
  std::atomic<int64_t> verify_failed{0};
  int verify_every = 1000;
  EVP_PKEY* issuer_key = nullptr;  // borrowed from main
  std::mutex mu;
  std::vector<double> latencies_ms;       // guarded by mu
  std::map<std::string, int64_t> errors;  // guarded by mu
  std::string run_id;
  double rate = 0;  // requests per second over all workers; 0: as fast as the server answers
  Clock::time_point start;

  // Take claims the next request number, or -1 when the run is over. With a rate, it waits for the request's
  // slot in an even schedule (open loop: a slow answer does not delay the next request).
  int64_t Take() {
    int64_t n;
    if (count > 0) {
      n = sent.fetch_add(1);
      if (n >= count) return -1;
    } else {
      if (Clock::now() >= deadline) return -1;
      n = sent.fetch_add(1);
    }
    if (rate > 0) {
      std::this_thread::sleep_until(start + std::chrono::duration_cast<Clock::duration>(
                                                std::chrono::duration<double>(static_cast<double>(n) / rate)));
    }
    return n;
  }
  void Record(double ms, const std::string& error, const std::string& der) {
    int64_t n = done.fetch_add(1);
    if (error.empty() && verify_every > 0 && n % verify_every == 0) {
      const auto* p = reinterpret_cast<const unsigned char*>(der.data());
      linesign::OsslPtr<X509> cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
      bool ok = cert != nullptr && X509_verify(cert.get(), issuer_key) == 1;
      (ok ? verified : verify_failed).fetch_add(1);
    }
    std::lock_guard<std::mutex> lock(mu);
    if (error.empty()) {
      latencies_ms.push_back(ms);
    } else {
      errors[error]++;
    }
  }
};

void UnaryWorker(CertificateAuthority::Stub* stub, Shared* s) {
  for (int64_t n; (n = s->Take()) >= 0;) {
    linesign::v1::SignCsrRequest req;
    req.set_csr_der(s->csrs[n % s->csrs.size()]);
    req.set_request_id(absl::StrCat(s->run_id, "-", n));
    linesign::v1::SignCsrResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    auto t0 = Clock::now();
    grpc::Status st = stub->SignCsr(&ctx, req, &resp);
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    s->Record(ms, st.ok() ? "" : linesign::StatusCodeName(st.error_code()), resp.certificate_der());
  }
}

void StreamWorker(CertificateAuthority::Stub* stub, Shared* s, int window) {
  grpc::ClientContext ctx;
  auto stream = stub->SignCsrStream(&ctx);
  std::mutex mu;
  std::condition_variable cv;
  std::map<int64_t, Clock::time_point> outstanding;  // guarded by mu
  std::thread reader([&] {
    linesign::v1::SignCsrStreamResponse resp;
    while (stream->Read(&resp)) {
      int64_t n = std::stoll(resp.request_id().substr(resp.request_id().rfind('-') + 1));
      Clock::time_point t0;
      {
        std::lock_guard<std::mutex> lock(mu);
        t0 = outstanding[n];
        outstanding.erase(n);
      }
      cv.notify_one();
      double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      s->Record(ms, resp.has_error() ? linesign::StatusCodeName(resp.error().code()) : "", resp.certificate().certificate_der());
    }
  });
  for (int64_t n; (n = s->Take()) >= 0;) {
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return static_cast<int>(outstanding.size()) < window; });
      outstanding[n] = Clock::now();
    }
    linesign::v1::SignCsrRequest req;
    req.set_csr_der(s->csrs[n % s->csrs.size()]);
    req.set_request_id(absl::StrCat(s->run_id, "-", n));
    if (!stream->Write(req)) break;
  }
  stream->WritesDone();
  reader.join();
  grpc::Status st = stream->Finish();
  if (!st.ok()) s->Record(0, absl::StrCat("stream ", linesign::StatusCodeName(st.error_code())), "");
}

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t i = static_cast<size_t>(p * (sorted.size() - 1));
  return sorted[i];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"linesign-bench: end-to-end load against a linesign server"};
  std::string server = "127.0.0.1:7443", mode = "stream", key = "ec-p256";
  int concurrency = 4, window = 64, pool = 64;
  int64_t count = 0;
  double duration = 10;
  bool json = false;
  Shared s;
  app.add_option("--server", server, "host:port")->capture_default_str();
  app.add_option("--mode", mode, "stream (SignCsrStream) or unary (SignCsr)")
      ->check(CLI::IsMember({"stream", "unary"}))->capture_default_str();
  app.add_option("--concurrency", concurrency, "streams (stream mode) or calling threads (unary mode)")
      ->capture_default_str();
  app.add_option("--window", window, "requests in flight per stream")->capture_default_str();
  app.add_option("--count", count, "stop after this many certificates (overrides --duration)");
  app.add_option("--duration", duration, "seconds to run")->capture_default_str();
  app.add_option("--key", key, "device key type: ec-p256, ec-p384, ed25519, rsa-2048")->capture_default_str();
  app.add_option("--rate", s.rate, "total requests per second, evenly spaced (0: as fast as possible)")
      ->capture_default_str();
  app.add_option("--pool", pool, "distinct CSRs pre-generated")->capture_default_str();
  app.add_option("--verify-every", s.verify_every, "verify every Nth certificate's signature (0: none)")
      ->capture_default_str();
  app.add_flag("--json", json, "print the summary as one JSON object");
  linesign::client::TlsFiles tls;
  app.add_option("--tls-dir", tls.tls_dir, "Directory with ca.pem, cert.pem and key.pem (e.g. DEV_DIR/station)");
  app.add_option("--cacert", tls.ca_file, "PEM CA bundle that issued the server's certificate");
  app.add_option("--cert", tls.cert_file, "Station client certificate (PEM)");
  app.add_option("--key-file", tls.key_file, "Its private key (PEM)");
  app.add_flag("--insecure", tls.insecure, "Plaintext, for a loopback server with tls.insecure");
  CLI11_PARSE(app, argc, argv);

  for (int i = 0; i < pool; ++i) {
    auto k = linesign::client::GenerateKey(key);
    if (!k.ok()) {
      std::cerr << "linesign-bench: " << k.status().message() << "\n";
      return 2;
    }
    auto csr = linesign::client::MakeCsr(k->get(), absl::StrCat("/CN=BENCH", i), {});
    if (!csr.ok()) return 2;
    s.csrs.push_back(*csr);
  }
  auto credentials = linesign::client::Credentials(tls);
  if (!credentials.ok()) {
    std::cerr << "linesign-bench: " << credentials.status().message() << "\n";
    return 2;
  }
  std::vector<std::unique_ptr<CertificateAuthority::Stub>> stubs;
  for (int i = 0; i < concurrency; ++i) {  // each worker its own connection
    stubs.push_back(CertificateAuthority::NewStub(linesign::client::Connect(server, *credentials)));
  }
  linesign::v1::GetCaChainResponse chain;
  {
    grpc::ClientContext ctx;
    grpc::Status st = stubs[0]->GetCaChain(&ctx, {}, &chain);
    if (!st.ok()) {
      std::cerr << "linesign-bench: GetCaChain failed: " << st.error_message() << "\n";
      return 1;
    }
  }
  auto ca = linesign::ParseCertificatesPem(chain.chain_pem(), "chain");
  if (!ca.ok()) return 1;
  s.issuer_key = X509_get0_pubkey((*ca)[0].get());
  unsigned char rnd[8];
  RAND_bytes(rnd, sizeof(rnd));
  s.run_id = "bench-" + linesign::Hex(std::string(reinterpret_cast<char*>(rnd), sizeof(rnd)));
  s.count = count;
  const double cpu_start = CpuSeconds();
  auto start = Clock::now();
  s.deadline = start + std::chrono::milliseconds(static_cast<int64_t>(duration * 1000));
  s.start = start;

  std::vector<std::thread> workers;
  for (int i = 0; i < concurrency; ++i) {
    workers.emplace_back([&, i] {
      if (mode == "unary") {
        UnaryWorker(stubs[i].get(), &s);
      } else {
        StreamWorker(stubs[i].get(), &s, window);
      }
    });
  }
  std::atomic<bool> finished{false};
  std::thread progress([&] {
    int64_t last = 0;
    while (!finished) {
      std::this_thread::sleep_for(std::chrono::seconds(1));
      int64_t d = s.done.load();
      std::cerr << absl::StrFormat("\r%6.1fs  %9d certs  %8d/s   ",
                                   std::chrono::duration<double>(Clock::now() - start).count(), d, d - last);
      last = d;
    }
    std::cerr << "\n";
  });
  for (auto& w : workers) w.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  // The generator's own cost per certificate, so a run shows whether it, not the server, was the limit.
  const double cpu_us_per_cert = (CpuSeconds() - cpu_start) * 1e6 / std::max<size_t>(1, s.latencies_ms.size());
  finished = true;
  progress.join();

  std::sort(s.latencies_ms.begin(), s.latencies_ms.end());
  int64_t errors = 0;
  for (const auto& [k, v] : s.errors) errors += v;
  const auto& lat = s.latencies_ms;
  const double rate = lat.size() / elapsed, p50 = Percentile(lat, 0.50), p95 = Percentile(lat, 0.95),
               p99 = Percentile(lat, 0.99), max = lat.empty() ? 0 : lat.back();
  const int64_t verified = s.verified.load(), verify_failed = s.verify_failed.load();
  if (json) {
    std::string errs;
    for (const auto& [k, v] : s.errors) absl::StrAppend(&errs, errs.empty() ? "" : ",", "\"", k, "\":", v);
    std::cout << absl::StrFormat(
        "{\"mode\":\"%s\",\"key\":\"%s\",\"concurrency\":%d,\"certificates\":%d,\"seconds\":%.3f,"
        "\"certs_per_second\":%.1f,\"p50_ms\":%.3f,\"p95_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
        "\"errors\":%d,\"errors_by_code\":{%s},\"verified\":%d,\"verify_failed\":%d,"
        "\"generator_cpu_us_per_cert\":%.1f}\n",
        mode, key, concurrency, lat.size(), elapsed, rate, p50, p95, p99, max, errors, errs, verified, verify_failed,
        cpu_us_per_cert);
  } else {
    std::cout << absl::StrFormat(
        "%s, %s keys, concurrency %d: %d certificates in %.2f s = %.0f certs/s\n"
        "latency ms: p50 %.3f  p95 %.3f  p99 %.3f  max %.3f\n"
        "errors: %d%s   sample verified: %d ok, %d failed\n"
        "load generator CPU: %.1f us per certificate\n",
        mode, key, concurrency, lat.size(), elapsed, rate, p50, p95, p99, max, errors,
        errors ? " (see errors_by_code with --json)" : "", verified, verify_failed, cpu_us_per_cert);
  }
  return s.verify_failed.load() == 0 ? 0 : 1;
}
