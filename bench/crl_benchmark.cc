// linesign-crl-bench: how big a full CRL is and how long it takes to make, for N revoked certificates (100,000 by
// default), on the real path: the CA key in a SoftHSM2 token made by deploy/ceremony.sh, a durable SQLite store,
// the server's CrlBuilder and the store's BeginCrl / SaveCrl. Not a test: it prints figures (bench/README.md).
//
// The N revoked certificates are recorded directly as revoked rows (RecordBatch in batches of 1,000), not revoked
// one by one through RevokeCertificate: each revocation is its own durable transaction, and that cost is not what
// this measures.
#include <algorithm>
#include <cstdio>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/openssl_util.h"
#include "hsm/open_signer.h"
#include "server/issuance/certificate_builder.h"
#include "server/revocation/crl_builder.h"
#include "server/store/sqlite/sqlite_store.h"
#include "tests/testing/test_ca.h"

namespace linesign {
namespace {

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int Run(int revoked, int rounds, const std::string& algorithm) {
  auto test_ca = testing::TestCa::Create(algorithm);
  if (!test_ca.ok()) {
    std::fprintf(stderr, "ceremony: %s\n", std::string(test_ca.status().message()).c_str());
    return 1;
  }
  auto ca = issuance::LoadIssuingCa(test_ca->chain_pem, absl::Now());
  if (!ca.ok()) return 1;
  auto signer = hsm::OpenSigner(test_ca->Config("/dev/null").hsm(), X509_get0_pubkey(ca->certificate.get()), 1);
  if (!signer.ok()) {
    std::fprintf(stderr, "signer: %s\n", std::string(signer.status().message()).c_str());
    return 1;
  }
  auto builder = revocation::CrlBuilder::Create(&*ca, signer->get());
  if (!builder.ok()) return 1;
  auto store = store::SqliteStore::Open(test_ca->dir + "/bench.db");
  if (!store.ok()) return 1;

  absl::Time setup = absl::Now();
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  for (int done = 0; done < revoked;) {
    store::Batch batch;
    for (int i = 0; i < 1000 && done < revoked; ++i, ++done) {
      store::BatchEntry e;
      e.cert.issuer_id = ca->issuer_id;
      e.cert.serial_hex = Hex(issuance::NewSerial());  // as issued: the time, then 80 random bits
      e.cert.subject = "CN=bench";
      e.cert.station = "bench";
      e.cert.profile = "device";
      e.cert.request_id = absl::StrCat("r", done);
      e.cert.der = "x";
      e.cert.issued_at = now - 86400;
      e.cert.not_after = now + 365 * 86400;
      e.cert.status = store::CertificateStatus::kRevoked;
      e.cert.revoked_at = now - 3600 + done % 3600;
      e.cert.revocation_reason = done % 7 == 0 ? 0 : 1 + done % 5;  // a seventh unspecified (no reasonCode)
      batch.entries.push_back(std::move(e));
    }
    if (!(*store)->RecordBatch(batch).ok()) return 1;
  }
  std::fprintf(stderr, "recorded %d revoked certificates in %.1f s\n", revoked,
               absl::ToDoubleSeconds(absl::Now() - setup));

  std::vector<double> snapshot_ms, build_ms, save_ms, total_ms, sign_ms;
  size_t der_size = 0;
  for (int round = 0; round < rounds; ++round) {
    absl::Time t0 = absl::Now();
    auto snap = (*store)->BeginCrl(ca->issuer_id);
    absl::Time t1 = absl::Now();
    if (!snap.ok() || static_cast<int>(snap->entries.size()) != revoked) return 1;
    revocation::CrlContent content{.number = snap->number,
                                   .this_update = absl::FromUnixSeconds(now),
                                   .next_update = absl::FromUnixSeconds(now) + absl::Hours(168),
                                   .entries = std::move(snap->entries)};
    auto der = (*builder)->Build(content);
    absl::Time t2 = absl::Now();
    if (!der.ok()) {
      std::fprintf(stderr, "build: %s\n", std::string(der.status().message()).c_str());
      return 1;
    }
    auto saved = (*store)->SaveCrl(ca->issuer_id, {.number = snap->number,
                                                   .revocations = snap->revocations,
                                                   .this_update = content.this_update,
                                                   .next_update = content.next_update,
                                                   .der = *der});
    absl::Time t3 = absl::Now();
    if (!saved.ok()) return 1;
    // The signature alone (the TBSCertList is about as long as the CRL: SHA + one HSM operation).
    auto sig = (*signer)->Sign(*der);
    absl::Time t4 = absl::Now();
    if (!sig.ok()) return 1;
    snapshot_ms.push_back(Ms(t1 - t0));
    build_ms.push_back(Ms(t2 - t1));
    save_ms.push_back(Ms(t3 - t2));
    total_ms.push_back(Ms(t3 - t0));
    sign_ms.push_back(Ms(t4 - t3));
    der_size = der->size();
  }
  const size_t pem_size = PemEncode("X509 CRL", std::string(der_size, 'x')).size();
  std::printf(
      "{\"revoked\": %d, \"algorithm\": \"%s\", \"rounds\": %d, \"der_bytes\": %zu, \"pem_bytes\": %zu, "
      "\"bytes_per_entry\": %.1f, \"median_ms\": {\"store_snapshot\": %.1f, \"build_and_sign\": %.1f, "
      "\"of_which_hsm_sign\": %.1f, \"store_save\": %.1f, \"total\": %.1f}}\n",
      revoked, algorithm.c_str(), rounds, der_size, pem_size, static_cast<double>(der_size) / std::max(revoked, 1),
      Median(snapshot_ms), Median(build_ms), Median(sign_ms), Median(save_ms), Median(total_ms));
  return 0;
}

}  // namespace
}  // namespace linesign

int main(int argc, char** argv) {
  CLI::App app{"linesign-crl-bench: CRL size and generation time for N revoked certificates"};
  int revoked = 100000, rounds = 5;
  std::string algorithm = "ec-p256";
  app.add_option("--revoked", revoked, "Revoked certificates in the CRL")->capture_default_str();
  app.add_option("--rounds", rounds, "CRLs to make (the median is printed)")->capture_default_str();
  app.add_option("--algorithm", algorithm, "CA key: ec-p256, ec-p384, rsa-2048")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return linesign::Run(revoked, std::max(rounds, 1), algorithm);
}
