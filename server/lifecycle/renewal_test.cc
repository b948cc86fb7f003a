// Renewal against real parts: a software CA, the real batch signer, real SQLite files (two handles on one file
// stand for two server processes), and an injected clock that moves certificates into their renewal window.
#include "server/lifecycle/renewal.h"

#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <future>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/openssl_util.h"
#include "common/testing/fake_clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/config/config.h"
#include "server/csr/csr.h"
#include "server/store/sqlite/sqlite_store.h"
#include "tests/testing/certs.h"
#include "tests/testing/software_ca.h"
#include "tests/testing/test_ca.h"

namespace linesign::lifecycle {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// VerifyAt verifies `der` against the CA (trusted) at `at` with OpenSSL's chain verifier: "" when it verifies.
std::string VerifyAt(const std::string& der, const std::string& ca_pem_file, absl::Time at) {
  auto leaf = testing::ParseDer(der);
  if (leaf == nullptr) return "cannot parse";
  OsslPtr<X509_STORE> store(X509_STORE_new());
  if (X509_STORE_load_file(store.get(), ca_pem_file.c_str()) != 1) return "cannot load CA";
  OsslPtr<X509_STORE_CTX> ctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(ctx.get(), store.get(), leaf.get(), nullptr);
  X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_CLIENT);
  X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(ctx.get()), absl::ToTimeT(at));
  if (X509_verify_cert(ctx.get()) == 1) return "";
  return X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()));
}

// One server process: its own store handle on the shared file, batch signer, renewer and scanner.
struct Process {
  std::unique_ptr<store::SqliteStore> store;
  std::unique_ptr<issuance::BatchSigner> signer;
  std::unique_ptr<Renewer> renewer;
  std::unique_ptr<RenewalScanner> scanner;
};

class RenewalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ca_ = testing::SoftwareCa::Create("ec-p256");
    ASSERT_NE(ca_, nullptr);
    for (const char* name : {"device", "notify", "off"}) {
      auto& p = (*config_.mutable_profiles())[name];
      p.set_validity_days(30);  // due 10 days before the end: after 20 days
      p.add_san_types("dns");
      p.set_renewal(name == std::string("device") ? "managed" : name);
    }
    config::ApplyDefaults(&config_);
    profiles_ = *profile::Profiles::Compile(config_);
    builder_ = *issuance::CertificateBuilder::Create(&ca_->ca, ca_->signer.get());
    db_ = testing::TempDir("renewal") + "/db";
    a_ = MakeProcess("a");
  }

  Process MakeProcess(const std::string& owner) {
    Process p;
    p.store = *store::SqliteStore::Open(db_, &clock_);
    p.signer = issuance::BatchSigner::Create(builder_.get(), p.store.get(),
                                             {.workers = 2, .max_batch = 8, .clock = &clock_});
    p.renewer = std::make_unique<Renewer>(Renewer::Parts{ca_->ca.issuer_id, p.store.get(), p.signer.get(), &profiles_});
    p.scanner = std::make_unique<RenewalScanner>(ca_->ca.issuer_id, p.renewer.get(), p.store.get(), p.store.get(),
                                                 &profiles_, RenewalScanner::Options{.batch = 3, .owner = owner});
    return p;
  }

  // Issue signs a CSR for `cn` under `profile` through process `p` at the clock's time.
  store::CertificateRecord Issue(Process& p, const std::string& cn, const std::string& profile = "device") {
    auto checked = csr::CheckCsr(testing::Csr("ec-p256", "/CN=" + cn + "/O=Acme", {"DNS:" + cn + ".example"}),
                                 **profiles_.Find(profile));
    EXPECT_TRUE(checked.ok()) << checked.status();
    std::promise<absl::StatusOr<store::CertificateRecord>> promise;
    auto future = promise.get_future();
    issuance::SignJob job{csr::MakeIssuanceRequest(*checked, *profiles_.Find(profile), "station-1", "req-" + cn),
                          [&promise](absl::StatusOr<store::CertificateRecord> r, bool) { promise.set_value(r); }};
    EXPECT_TRUE(p.signer->Submit(std::move(job)).ok());
    auto r = future.get();
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : store::CertificateRecord{};
  }

  std::pair<absl::StatusOr<store::CertificateRecord>, bool> Renew(Process& p, const std::string& serial) {
    std::promise<std::pair<absl::StatusOr<store::CertificateRecord>, bool>> promise;
    auto future = promise.get_future();
    p.renewer->Renew(serial, "admin", [&promise](absl::StatusOr<store::CertificateRecord> r, bool replayed) {
      promise.set_value({std::move(r), replayed});
    });
    return future.get();
  }

  store::CertificateRecord Find(const std::string& serial) {
    auto r = a_.store->FindBySerial(ca_->ca.issuer_id, serial);
    EXPECT_TRUE(r.ok() && r->has_value()) << serial;
    return r.ok() && r->has_value() ? **r : store::CertificateRecord{};
  }

  // Events returns the lifecycle events (ISSUED ones aside) as "TYPE SERIAL".
  std::vector<std::string> Events() {
    std::vector<std::string> out;
    auto events = a_.store->ReadAfter(0, 1000);
    EXPECT_TRUE(events.ok());
    for (const auto& e : *events) {
      if (e.type != store::kEventIssued) out.push_back(e.type + " " + e.serial_hex);
    }
    return out;
  }

  testing::FakeClock clock_{absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now()))};
  v1::ServerConfig config_;
  profile::Profiles profiles_;
  std::unique_ptr<testing::SoftwareCa> ca_;
  std::unique_ptr<issuance::CertificateBuilder> builder_;
  std::string db_;
  Process a_;
};

// Short-lived certificates become due after 20 of their 30 days: RENEWAL_DUE once each, renewed once each (same
// subject, SANs and key, new serial, fresh validity, chain-verifies, linked both ways, RENEWED), and further
// rounds change nothing. Before the window nothing happens.
TEST_F(RenewalTest, DueCertificatesAreMarkedOnceAndRenewedOnce) {
  std::vector<store::CertificateRecord> old;
  for (int i = 0; i < 5; ++i) old.push_back(Issue(a_, absl::StrCat("DEV", i)));
  ASSERT_TRUE(a_.scanner->RunOnce(clock_.Now()).ok());
  clock_.Advance(absl::Hours(24 * 19));
  ASSERT_TRUE(a_.scanner->RunOnce(clock_.Now()).ok());
  EXPECT_THAT(Events(), ElementsAre());

  clock_.Advance(absl::Hours(24 * 2));  // day 21: due
  auto marked = a_.scanner->MarkDue(clock_.Now());
  ASSERT_TRUE(marked.ok()) << marked.status();
  EXPECT_EQ(*marked, 5);  // batches of 3: two passes
  auto renewed = a_.scanner->RenewClaimed(clock_.Now());
  ASSERT_TRUE(renewed.ok()) << renewed.status();
  EXPECT_EQ(*renewed, 5);
  for (int round = 0; round < 3; ++round) ASSERT_TRUE(a_.scanner->RunOnce(clock_.Now()).ok());

  std::vector<std::string> expected;
  for (const auto& o : old) expected.push_back("RENEWAL_DUE " + o.serial_hex);
  for (const auto& o : old) {
    store::CertificateRecord before = Find(o.serial_hex);
    EXPECT_EQ(before.status, store::CertificateStatus::kSuperseded);
    EXPECT_EQ(before.renewal_due_at, absl::ToUnixSeconds(clock_.Now()));
    ASSERT_FALSE(before.renewed_by_serial.empty());
    store::CertificateRecord next = Find(before.renewed_by_serial);
    expected.push_back("RENEWED " + next.serial_hex);
    EXPECT_EQ(next.renews_serial, o.serial_hex);
    EXPECT_EQ(next.status, store::CertificateStatus::kValid);
    EXPECT_EQ(next.subject, o.subject);
    EXPECT_EQ(next.sans, o.sans);
    EXPECT_EQ(next.spki_sha256, o.spki_sha256);
    EXPECT_EQ(next.station, issuance::kServerIdentity);
    EXPECT_EQ(next.request_id, "renew:" + o.serial_hex);
    EXPECT_EQ(next.not_after - next.not_before, o.not_after - o.not_before);  // the profile's validity again
    EXPECT_EQ(next.issued_at, absl::ToUnixSeconds(clock_.Now()));
    EXPECT_EQ(VerifyAt(next.der, ca_->chain_file, clock_.Now()), "");
  }
  // The RENEWAL_DUE events come first (marked in one round), then the renewals, one per certificate.
  auto events = Events();
  ASSERT_EQ(events.size(), 10u);
  EXPECT_THAT(std::vector<std::string>(events.begin(), events.begin() + 5),
              ::testing::UnorderedElementsAreArray(std::vector<std::string>(expected.begin(), expected.begin() + 5)));
  EXPECT_THAT(std::vector<std::string>(events.begin() + 5, events.end()),
              ::testing::UnorderedElementsAreArray(std::vector<std::string>(expected.begin() + 5, expected.end())));
  EXPECT_EQ(*a_.store->Count(), 10);
  // The successors are not due (fresh validity) until their own day 20.
  clock_.Advance(absl::Hours(24 * 19));
  ASSERT_TRUE(a_.scanner->RunOnce(clock_.Now()).ok());
  EXPECT_EQ(Events().size(), 10u);
}

// Two server processes (two store handles on one file, each with its own signer and scanner) scanning at the same
// moment: each certificate is marked once and renewed once.
TEST_F(RenewalTest, TwoProcessesOnOneDatabaseRenewEachCertificateOnce) {
  Process b = MakeProcess("b");
  std::vector<store::CertificateRecord> old;
  for (int i = 0; i < 12; ++i) old.push_back(Issue(i % 2 == 0 ? a_ : b, absl::StrCat("TWO", i)));
  clock_.Advance(absl::Hours(24 * 21));
  for (int round = 0; round < 3; ++round) {
    std::thread other([&] { EXPECT_TRUE(b.scanner->RunOnce(clock_.Now()).ok()); });
    EXPECT_TRUE(a_.scanner->RunOnce(clock_.Now()).ok());
    other.join();
  }
  std::map<std::string, int> per_type;
  std::map<std::string, int> due_per_serial;
  auto events = a_.store->ReadAfter(0, 1000);
  for (const auto& e : *events) {
    ++per_type[e.type];
    if (e.type == store::kEventRenewalDue) ++due_per_serial[e.serial_hex];
  }
  EXPECT_EQ(per_type[store::kEventRenewalDue], 12);
  EXPECT_EQ(per_type[store::kEventRenewed], 12);
  EXPECT_EQ(due_per_serial.size(), 12u);
  EXPECT_EQ(*a_.store->Count(), 24);
  for (const auto& o : old) {
    store::CertificateRecord before = Find(o.serial_hex);
    EXPECT_EQ(before.status, store::CertificateStatus::kSuperseded);
    EXPECT_EQ(Find(before.renewed_by_serial).renews_serial, o.serial_hex);
  }
}

// A scanner that claimed a renewal and died: once its lease has run out another process renews the certificate;
// the dead one's claim is then refused.
TEST_F(RenewalTest, AnotherProcessTakesOverARenewalWhoseLeaseExpired) {
  Process b = MakeProcess("b");
  store::CertificateRecord old = Issue(a_, "LEASE");
  clock_.Advance(absl::Hours(24 * 21));
  ASSERT_EQ(*a_.scanner->MarkDue(clock_.Now()), 1);
  auto claimed = a_.store->Claim({.kind = kRenewalOutboxKind, .now = clock_.Now(), .lease = absl::Minutes(2),
                                  .limit = 10, .owner = "crashed"});
  ASSERT_EQ(claimed->size(), 1u);
  EXPECT_EQ(*b.scanner->RenewClaimed(clock_.Now()), 0);  // held by the crashed process
  clock_.Advance(absl::Minutes(3));
  EXPECT_EQ(*b.scanner->RenewClaimed(clock_.Now()), 1);
  EXPECT_EQ(Find(old.serial_hex).status, store::CertificateStatus::kSuperseded);
  EXPECT_EQ(a_.store->Complete((*claimed)[0].id, "crashed", clock_.Now()).code(),
            absl::StatusCode::kFailedPrecondition);
}

// notify: RENEWAL_DUE and nothing else; off: nothing at all.
TEST_F(RenewalTest, NotifyProfilesOnlyTellAndOffProfilesDoNothing) {
  store::CertificateRecord notify = Issue(a_, "NOTIFY", "notify");
  Issue(a_, "OFF", "off");
  clock_.Advance(absl::Hours(24 * 21));
  for (int round = 0; round < 2; ++round) ASSERT_TRUE(a_.scanner->RunOnce(clock_.Now()).ok());
  EXPECT_THAT(Events(), ElementsAre("RENEWAL_DUE " + notify.serial_hex));
  EXPECT_EQ(Find(notify.serial_hex).status, store::CertificateStatus::kValid);
  EXPECT_EQ(*a_.store->Count(), 2);
}

// A forced renewal: an unknown serial is NOT_FOUND, a superseded or revoked certificate FAILED_PRECONDITION with
// the reason; none of them changes anything. A renewal racing another one is answered with the first's
// certificate (the same request id), never a second successor.
TEST_F(RenewalTest, ForcedRenewalRefusesWhatCannotBeRenewed) {
  store::CertificateRecord old = Issue(a_, "FORCE");
  auto unknown = Renew(a_, "0123456789ABCDEF");
  EXPECT_EQ(unknown.first.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(unknown.first.status().message()), HasSubstr("no certificate with serial 0123456789ABCDEF"));

  auto first = Renew(a_, old.serial_hex);  // before it is due: an administrator may
  ASSERT_TRUE(first.first.ok()) << first.first.status();
  EXPECT_FALSE(first.second);
  auto again = Renew(a_, old.serial_hex);
  EXPECT_EQ(again.first.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(again.first.status().message()),
              HasSubstr(absl::StrCat("is already superseded by ", first.first->serial_hex)));

  // A revoked certificate (recorded as such: revocation itself is another part of the lifecycle).
  store::CertificateRecord revoked = old;
  revoked.serial_hex = "7E57";
  revoked.request_id = "revoked-one";
  revoked.status = store::CertificateStatus::kRevoked;
  revoked.revoked_at = absl::ToUnixSeconds(clock_.Now());
  revoked.revocation_reason = 1;
  ASSERT_TRUE(a_.store->RecordBatch({.entries = {{.cert = revoked}}}).ok());
  auto events_before = a_.store->ReadAfter(0, 1000)->size();
  auto refused = Renew(a_, "7E57");
  EXPECT_EQ(refused.first.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.first.status().message()), HasSubstr("certificate 7E57 is revoked"));
  EXPECT_EQ(*a_.store->Count(), 3);
  EXPECT_EQ(a_.store->ReadAfter(0, 1000)->size(), events_before);
}

}  // namespace
}  // namespace linesign::lifecycle
