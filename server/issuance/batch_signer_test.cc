#include "server/issuance/batch_signer.h"

#include <atomic>
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "absl/strings/str_cat.h"
#include "common/openssl_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/config/config.h"
#include "server/csr/csr.h"
#include "server/store/sqlite/sqlite_store.h"
#include "tests/testing/certs.h"
#include "tests/testing/software_ca.h"
#include "tests/testing/test_ca.h"

namespace linesign::issuance {
namespace {

class BatchSignerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ca_ = testing::SoftwareCa::Create("ec-p256");
    ASSERT_NE(ca_, nullptr);
    auto& p = (*config_.mutable_profiles())["device"];
    p.set_validity_days(1);
    p.add_san_types("dns");
    p.add_san_types("uri");
    p.add_san_types("ip");
    (*config_.mutable_profiles())["server"].set_validity_days(1);
    auto& registering = (*config_.mutable_profiles())["registering"];
    registering.set_validity_days(1);
    registering.mutable_iot()->set_register_("without_ca");
    registering.mutable_iot()->add_targets("main");
    registering.mutable_iot()->add_targets("eu");
    auto& iot_off = (*config_.mutable_profiles())["iot-off"];
    iot_off.set_validity_days(1);
    iot_off.mutable_iot()->set_register_("off");
    iot_off.mutable_iot()->add_targets("main");
    config::ApplyDefaults(&config_);
    auto profiles = profile::Profiles::Compile(config_);
    ASSERT_TRUE(profiles.ok()) << profiles.status();
    profiles_ = *std::move(profiles);
    auto builder = CertificateBuilder::Create(&ca_->ca, ca_->signer.get());
    ASSERT_TRUE(builder.ok());
    builder_ = *std::move(builder);
    db_path_ = testing::TempDir("batch") + "/db";
    auto store = store::SqliteStore::Open(db_path_);
    ASSERT_TRUE(store.ok());
    store_ = *std::move(store);
    csr_ = *csr::CheckCsr(testing::Csr("ec-p256", "/CN=BATCH"), config_.profiles().at("device"), "device");
  }

  // Job returns a job for `request_id` whose result lands in the returned future.
  std::pair<SignJob, std::future<std::pair<absl::StatusOr<store::CertificateRecord>, bool>>> Job(
      const std::string& request_id, const csr::CheckedCsr* csr = nullptr, const std::string& profile = "device") {
    auto promise = std::make_shared<std::promise<std::pair<absl::StatusOr<store::CertificateRecord>, bool>>>();
    SignJob job;
    job.request = csr::MakeIssuanceRequest(csr != nullptr ? *csr : csr_, *profiles_.Find(profile), "station",
                                           request_id);
    job.done = [promise](absl::StatusOr<store::CertificateRecord> r, bool replayed) {
      promise->set_value({std::move(r), replayed});
    };
    return {std::move(job), promise->get_future()};
  }

  v1::ServerConfig config_;
  profile::Profiles profiles_;
  std::unique_ptr<testing::SoftwareCa> ca_;
  std::unique_ptr<CertificateBuilder> builder_;
  std::string db_path_;
  std::unique_ptr<store::SqliteStore> store_;
  csr::CheckedCsr csr_;
};

// BarrierSigner signs with `inner` once `want` signatures are waiting at once (or after 10 s, so a signer that
// never gets there fails the test instead of hanging it), and records the most that were ever in flight.
class BarrierSigner final : public hsm::Signer {
 public:
  BarrierSigner(const hsm::Signer* inner, int want) : inner_(inner), want_(want) {}
  absl::StatusOr<std::string> Sign(absl::string_view message) const override {
    {
      std::unique_lock<std::mutex> lock(mu_);
      ++in_flight_;
      max_in_flight_ = std::max(max_in_flight_, in_flight_);
      if (in_flight_ >= want_) reached_ = true;
      cv_.notify_all();
      cv_.wait_for(lock, std::chrono::seconds(10), [&] { return reached_; });
    }
    auto sig = inner_->Sign(message);
    std::lock_guard<std::mutex> lock(mu_);
    --in_flight_;
    return sig;
  }
  hsm::SignatureAlgorithm algorithm() const override { return inner_->algorithm(); }
  std::string description() const override { return "barrier"; }
  int max_in_flight() const {
    std::lock_guard<std::mutex> lock(mu_);
    return max_in_flight_;
  }

 private:
  const hsm::Signer* inner_;
  const int want_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  mutable int in_flight_ = 0, max_in_flight_ = 0;
  mutable bool reached_ = false;
};

// hsm.sessions: one worker's batch is signed on the signing threads at once (a network HSM's latency is waited on
// that many times in parallel), and every request still gets its own recorded certificate. Before, a worker
// signed its batch one request after another: at most one signature in flight per worker.
TEST_F(BatchSignerTest, SignThreadsSignOneWorkersBatchInParallel) {
  BarrierSigner barrier(ca_->signer.get(), 4);
  auto builder = CertificateBuilder::Create(&ca_->ca, &barrier);
  ASSERT_TRUE(builder.ok());
  auto signer = BatchSigner::Create(builder->get(), store_.get(),
                                    {.workers = 1, .max_batch = 8, .max_linger = absl::Seconds(60),
                                     .sign_threads = 4});
  std::vector<std::future<std::pair<absl::StatusOr<store::CertificateRecord>, bool>>> results;
  for (int i = 0; i < 8; ++i) {
    auto [job, future] = Job(absl::StrCat("parallel-", i));
    ASSERT_TRUE(signer->Submit(std::move(job)).ok());
    results.push_back(std::move(future));
  }
  std::set<std::string> serials;
  for (int i = 0; i < 8; ++i) {
    auto [record, replayed] = results[i].get();
    ASSERT_TRUE(record.ok()) << record.status();
    EXPECT_EQ(record->request_id, absl::StrCat("parallel-", i));
    serials.insert(record->serial_hex);
  }
  EXPECT_EQ(serials.size(), 8u);
  EXPECT_EQ(*store_->Count(), 8);
  EXPECT_EQ(barrier.max_in_flight(), 4);
}

TEST_F(BatchSignerTest, ManyConcurrentSubmittersEachGetTheirOwnDurableCertificate) {
  auto signer = BatchSigner::Create(builder_.get(), store_.get(), {.workers = 2, .max_batch = 16});
  constexpr int kThreads = 4, kPerThread = 100;
  std::vector<std::future<std::pair<absl::StatusOr<store::CertificateRecord>, bool>>> results[kThreads];
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto [job, future] = Job("t" + std::to_string(t) + "-" + std::to_string(i));
        while (true) {
          absl::Status st = signer->Submit(std::move(job));
          if (st.ok()) break;
          ASSERT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        results[t].push_back(std::move(future));
      }
    });
  }
  for (auto& t : threads) t.join();
  std::set<std::string> serials;
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) {
      auto [record, replayed] = results[t][i].get();
      ASSERT_TRUE(record.ok()) << record.status();
      EXPECT_EQ(record->request_id, "t" + std::to_string(t) + "-" + std::to_string(i));
      EXPECT_FALSE(replayed);
      serials.insert(record->serial_hex);
      auto stored = store_->FindBySerial(ca_->ca.issuer_id, record->serial_hex);
      ASSERT_TRUE(stored.ok() && stored->has_value());
      EXPECT_EQ((*stored)->der, record->der);
    }
  }
  EXPECT_EQ(serials.size(), static_cast<size_t>(kThreads * kPerThread));
  EXPECT_EQ(*store_->Count(), kThreads * kPerThread);
  // Each certificate is one ISSUED event in the log.
  std::set<std::string> event_serials;
  for (int64_t cursor = 0;;) {
    auto events = store_->ReadAfter(cursor, 100);
    ASSERT_TRUE(events.ok()) << events.status();
    if (events->empty()) break;
    for (const auto& e : *events) {
      EXPECT_EQ(e.type, store::kEventIssued);
      EXPECT_EQ(e.issuer_id, ca_->ca.issuer_id);
      EXPECT_EQ(e.station, "station");
      EXPECT_EQ(e.profile, "device");
      EXPECT_TRUE(event_serials.insert(e.serial_hex).second) << "two events for " << e.serial_hex;
      cursor = e.id;
    }
  }
  EXPECT_EQ(event_serials, serials);
}

// A profile with iot.register enqueues one registration per target in the certificate's own transaction; one
// with register: off (or no iot section) enqueues nothing.
TEST_F(BatchSignerTest, ARegisteringProfileEnqueuesOneIotRegistrationPerTarget) {
  auto signer = BatchSigner::Create(builder_.get(), store_.get(), {.workers = 1, .max_batch = 8});
  std::map<std::string, std::string> serial_of;
  for (const char* profile : {"registering", "iot-off", "device"}) {
    auto [job, future] = Job(absl::StrCat("iot-", profile), nullptr, profile);
    ASSERT_TRUE(signer->Submit(std::move(job)).ok());
    auto [record, replayed] = future.get();
    ASSERT_TRUE(record.ok()) << profile << ": " << record.status();
    serial_of[profile] = record->serial_hex;
  }
  for (const char* target : {"main", "eu"}) {
    auto r = store_->GetIotRegistration({ca_->ca.issuer_id, serial_of["registering"], target});
    ASSERT_TRUE(r.ok() && r->has_value()) << target;
    EXPECT_EQ((*r)->state, store::IotRegistrationState::kPending);
  }
  for (const char* profile : {"iot-off", "device"}) {
    EXPECT_FALSE(store_->GetIotRegistration({ca_->ca.issuer_id, serial_of[profile], "main"})->has_value()) << profile;
  }
  auto items = store_->Claim(store::ClaimRequest{.kind = store::kIotRegisterOutboxKind,
                                                 .now = absl::Now() + absl::Hours(1), .limit = 100,
                                                 .owner = "test"});
  ASSERT_TRUE(items.ok());
  std::set<std::string> targets;
  for (const auto& item : *items) {
    auto key = store::ParseIotRegisterPayload(item.payload);
    ASSERT_TRUE(key.ok());
    EXPECT_EQ(key->serial_hex, serial_of["registering"]);
    targets.insert(key->target);
  }
  EXPECT_EQ(targets, (std::set<std::string>{"main", "eu"}));
}

TEST_F(BatchSignerTest, DuplicateRequestIdsInOneBatchYieldOneCertificate) {
  auto signer = BatchSigner::Create(builder_.get(), store_.get(),
                                    {.workers = 1, .max_batch = 8, .max_linger = absl::Milliseconds(50)});
  auto [a, fa] = Job("same");
  auto [b, fb] = Job("same");
  ASSERT_TRUE(signer->Submit(std::move(a)).ok());
  ASSERT_TRUE(signer->Submit(std::move(b)).ok());
  auto ra = fa.get(), rb = fb.get();
  ASSERT_TRUE(ra.first.ok() && rb.first.ok());
  EXPECT_EQ(ra.first->der, rb.first->der);
  EXPECT_NE(ra.second, rb.second);  // one issued, one replayed
  EXPECT_EQ(*store_->Count(), 1);

  auto other = *csr::CheckCsr(testing::Csr("ec-p256", "/CN=OTHER"), config_.profiles().at("device"), "device");
  auto [c, fc] = Job("same", &other);
  ASSERT_TRUE(signer->Submit(std::move(c)).ok());
  EXPECT_EQ(fc.get().first.status().code(), absl::StatusCode::kAlreadyExists);
}

// LostAnswerStore records through the real store and then, while `lose` is set, reports what a lost connection
// during COMMIT looks like: an error marked OutcomeUnknown, although the batch is recorded.
class LostAnswerStore final : public store::IssuanceStore {
 public:
  explicit LostAnswerStore(store::IssuanceStore* inner) : inner_(inner) {}
  absl::StatusOr<std::vector<store::RecordOutcome>> RecordBatch(const store::Batch& batch) override {
    auto outcomes = inner_->RecordBatch(batch);
    if (!outcomes.ok() || !lose) return outcomes;
    return store::OutcomeUnknown(absl::UnavailableError("store: commit: server closed the connection unexpectedly"));
  }
  absl::StatusOr<std::optional<store::CertificateRecord>> FindByRequest(const std::string& station,
                                                                        const std::string& request_id) override {
    return inner_->FindByRequest(station, request_id);
  }
  std::atomic<bool> lose{true};

 private:
  store::IssuanceStore* const inner_;
};

// A commit whose answer was lost: the certificate does not leave the server, the station is told it may have been
// recorded and to retry with the same request id, and that retry returns the recorded certificate (replayed), not
// a second one. An ordinary store failure still says "not issued".
TEST_F(BatchSignerTest, ACommitWhoseAnswerWasLostIsReportedAsMaybeRecordedAndTheRetryReplaysIt) {
  LostAnswerStore lossy(store_.get());
  auto signer = BatchSigner::Create(builder_.get(), &lossy, {.workers = 1, .max_batch = 4});
  auto [job, done] = Job("lost-answer");
  ASSERT_TRUE(signer->Submit(std::move(job)).ok());
  auto first = done.get();
  ASSERT_FALSE(first.first.ok());
  EXPECT_EQ(first.first.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(first.first.status().message()),
              ::testing::StartsWith("certificate not delivered (it may have been recorded: retry with the same "
                                    "request_id to get it): store: commit: server closed the connection"));
  EXPECT_EQ(*store_->Count(), 1);  // it was recorded all the same

  lossy.lose = false;
  auto [retry, retried] = Job("lost-answer");
  ASSERT_TRUE(signer->Submit(std::move(retry)).ok());
  auto second = retried.get();
  ASSERT_TRUE(second.first.ok()) << second.first.status();
  EXPECT_TRUE(second.second);  // replayed
  EXPECT_EQ(*store_->Count(), 1);
  EXPECT_EQ(second.first->request_id, "lost-answer");

  // Unmarked failures keep their words: nothing was recorded.
  EXPECT_FALSE(store::IsOutcomeUnknown(absl::UnavailableError("store: begin: no connection")));
  EXPECT_TRUE(store::IsOutcomeUnknown(store::OutcomeUnknown(absl::UnavailableError("x"))));
  EXPECT_TRUE(store::OutcomeUnknown(absl::OkStatus()).ok());
}

// A request id names one request: the same id and CSR under another profile is not a retry (it was answered
// with the device certificate and replayed=true) but ALREADY_EXISTS naming the earlier serial and profile.
TEST_F(BatchSignerTest, SameRequestIdAndCsrUnderAnotherProfileIsAlreadyExists) {
  auto signer = BatchSigner::Create(builder_.get(), store_.get(), {.workers = 1, .max_batch = 1});
  auto [a, fa] = Job("profiled", nullptr, "device");
  ASSERT_TRUE(signer->Submit(std::move(a)).ok());
  auto first = fa.get();
  ASSERT_TRUE(first.first.ok()) << first.first.status();
  auto [b, fb] = Job("profiled", nullptr, "server");
  ASSERT_TRUE(signer->Submit(std::move(b)).ok());
  auto second = fb.get();
  EXPECT_EQ(second.first.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(second.first.status().message(),
            absl::StrCat("request_id 'profiled' was already used for serial ", first.first->serial_hex,
                         " under profile 'device'; a different profile (here 'server') is a different request: "
                         "use a new request_id"));
  EXPECT_FALSE(second.second);
  EXPECT_EQ(*store_->Count(), 1);
  // The same profile again is still a replay.
  auto [c, fc] = Job("profiled", nullptr, "device");
  ASSERT_TRUE(signer->Submit(std::move(c)).ok());
  auto third = fc.get();
  ASSERT_TRUE(third.first.ok());
  EXPECT_TRUE(third.second);
  EXPECT_EQ(third.first->serial_hex, first.first->serial_hex);
}

// The record's SANs come from the request's typed SANs, with the type names records have always had.
TEST_F(BatchSignerTest, RecordHoldsTypedSans) {
  auto signer = BatchSigner::Create(builder_.get(), store_.get(), {.workers = 1, .max_batch = 1});
  auto csr = csr::CheckCsr(testing::Csr("ec-p256", "/CN=SANS", {"DNS:a.example", "URI:urn:x:a", "IP:10.6.6.6"}),
                           config_.profiles().at("device"), "device");
  ASSERT_TRUE(csr.ok()) << csr.status();
  auto [job, f] = Job("typed-sans", &*csr);
  ASSERT_TRUE(signer->Submit(std::move(job)).ok());
  auto result = f.get();
  ASSERT_TRUE(result.first.ok()) << result.first.status();
  std::vector<store::San> want = {{"DNS", "a.example"}, {"URI", "urn:x:a"}, {"IP Address", "10.6.6.6"}};
  EXPECT_EQ(result.first->sans, want);
  EXPECT_EQ((*store_->FindBySerial(ca_->ca.issuer_id, result.first->serial_hex))->sans, want);
}

// SubjectAndKey returns the subject Name and SubjectPublicKeyInfo DER of the certificate `der`.
std::pair<std::string, std::string> SubjectAndKey(const std::string& der) {
  auto cert = testing::ParseDer(der);
  if (cert == nullptr) return {};
  return {ToDer(i2d_X509_NAME, static_cast<const X509_NAME*>(X509_get_subject_name(cert.get()))),
          ToDer(i2d_X509_PUBKEY, static_cast<const X509_PUBKEY*>(X509_get_X509_PUBKEY(cert.get())))};
}

// Issuance without a CSR (the future renewal): a request made from a stored certificate's subject and key goes
// through the same batch signer, chain-verifies, links its predecessor, and records its events and outbox item
// in the certificate's transaction. The same renewal again is a replay, never a second certificate.
TEST_F(BatchSignerTest, RenewalWithoutACsrThroughTheSameSigner) {
  auto signer = BatchSigner::Create(builder_.get(), store_.get(), {.workers = 1, .max_batch = 4});
  auto csr = csr::CheckCsr(testing::Csr("ec-p256", "/CN=RENEWME", {"DNS:renew.example"}), **profiles_.Find("device"));
  ASSERT_TRUE(csr.ok()) << csr.status();
  auto [first_job, f0] = Job("first", &*csr);
  ASSERT_TRUE(signer->Submit(std::move(first_job)).ok());
  auto first = f0.get();
  ASSERT_TRUE(first.first.ok()) << first.first.status();
  const store::CertificateRecord& old = *first.first;

  auto renewal = [&] {
    auto [subject_der, spki_der] = SubjectAndKey(old.der);
    IssuanceRequest r;
    r.reason = IssuanceRequest::Reason::kRenewal;
    r.predecessor_serial = old.serial_hex;
    r.subject_der = subject_der;
    r.subject_text = old.subject;
    r.spki_der = spki_der;
    r.sans = {{csr::SanType::kDns, "renew.example"}};
    r.profile = *profiles_.Find(old.profile);
    r.requester = {IssuanceRequest::Requester::Kind::kServer, kServerIdentity, "renew:" + old.serial_hex};
    r.events.push_back(store::Event{.type = "RENEWED", .data = "{\"renews\":\"" + old.serial_hex + "\"}"});
    r.outbox.push_back(store::OutboxItem{.kind = "test.renewed", .dedupe_key = old.serial_hex, .payload = "p"});
    return r;
  };
  auto submit = [&](IssuanceRequest r) {
    auto promise = std::make_shared<std::promise<std::pair<absl::StatusOr<store::CertificateRecord>, bool>>>();
    auto future = promise->get_future();
    SignJob job{std::move(r), [promise](absl::StatusOr<store::CertificateRecord> rec, bool replayed) {
                  promise->set_value({std::move(rec), replayed});
                }};
    EXPECT_TRUE(signer->Submit(std::move(job)).ok());
    return future.get();
  };
  auto renewed = submit(renewal());
  ASSERT_TRUE(renewed.first.ok()) << renewed.first.status();
  const store::CertificateRecord& next = *renewed.first;
  EXPECT_FALSE(renewed.second);
  EXPECT_NE(next.serial_hex, old.serial_hex);
  EXPECT_EQ(next.renews_serial, old.serial_hex);
  EXPECT_EQ(next.station, kServerIdentity);
  EXPECT_EQ(next.request_id, "renew:" + old.serial_hex);
  EXPECT_TRUE(next.csr_sha256.empty());
  EXPECT_EQ(next.spki_sha256, old.spki_sha256);
  EXPECT_EQ(next.subject, old.subject);
  EXPECT_EQ(next.sans, old.sans);
  // Same subject and key, new serial, verifies against the CA with OpenSSL's chain verifier.
  auto cert = testing::ParseDer(next.der);
  ASSERT_NE(cert, nullptr);
  EXPECT_EQ(SubjectAndKey(next.der), SubjectAndKey(old.der));
  EXPECT_EQ(testing::VerifyChain(cert.get(), ca_->chain_file, ca_->chain_file), "");
  // Recorded with it: the certificate (its ISSUED event), the request's event (filled with the certificate) and
  // the outbox item.
  auto stored = store_->FindBySerial(ca_->ca.issuer_id, next.serial_hex);
  ASSERT_TRUE(stored.ok() && stored->has_value());
  EXPECT_EQ((*stored)->renews_serial, old.serial_hex);
  auto events = store_->ReadAfter(0, 100);
  ASSERT_TRUE(events.ok()) << events.status();
  int issued_for_next = 0, renewed_events = 0;
  for (const auto& e : *events) {
    if (e.serial_hex != next.serial_hex) continue;
    EXPECT_EQ(e.issuer_id, ca_->ca.issuer_id);
    EXPECT_EQ(e.station, kServerIdentity);
    EXPECT_EQ(e.profile, "device");
    if (e.type == store::kEventIssued) ++issued_for_next;
    if (e.type == "RENEWED") {
      ++renewed_events;
      EXPECT_THAT(e.data, ::testing::HasSubstr(old.serial_hex));
    }
  }
  EXPECT_EQ(issued_for_next, 1);
  EXPECT_EQ(renewed_events, 1);
  auto items = store_->Claim({.kind = "test.renewed", .now = absl::Now(), .limit = 10, .owner = "test"});
  ASSERT_TRUE(items.ok()) << items.status();
  ASSERT_EQ(items->size(), 1u);
  EXPECT_EQ((*items)[0].dedupe_key, old.serial_hex);
  EXPECT_EQ((*items)[0].payload, "p");

  // The same renewal again: the store's (identity, request id) uniqueness answers it with the same certificate.
  auto again = submit(renewal());
  ASSERT_TRUE(again.first.ok()) << again.first.status();
  EXPECT_TRUE(again.second);
  EXPECT_EQ(again.first->serial_hex, next.serial_hex);
  EXPECT_EQ(*store_->Count(), 2);
  // The same request id for another key is refused, not replayed.
  IssuanceRequest other = renewal();
  other.spki_der = SubjectAndKey(first.first->der).second;
  other.spki_der.back() ^= 1;
  auto refused = submit(std::move(other));
  EXPECT_EQ(refused.first.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(refused.first.status().message()), ::testing::HasSubstr("different subject or key"));
  EXPECT_EQ(*store_->Count(), 2);
}

// A CA verification certificate (AWS IoT: CN = the registration code) needs no CSR either: any subject and key.
TEST_F(BatchSignerTest, CaVerificationCertificateWithoutACsr) {
  auto signer = BatchSigner::Create(builder_.get(), store_.get(), {.workers = 1, .max_batch = 1});
  OsslPtr<EVP_PKEY> key(EVP_EC_gen("P-256"));
  std::unique_ptr<X509_NAME, decltype(&X509_NAME_free)> name(X509_NAME_new(), X509_NAME_free);
  ASSERT_EQ(X509_NAME_add_entry_by_txt(name.get(), "CN", MBSTRING_UTF8,
                                       reinterpret_cast<const unsigned char*>("0123456789abcdef"), -1, -1, 0),
            1);
  IssuanceRequest r;
  r.reason = IssuanceRequest::Reason::kCaVerification;
  r.subject_der = ToDer(i2d_X509_NAME, static_cast<const X509_NAME*>(name.get()));
  r.subject_text = "CN=0123456789abcdef";
  r.spki_der = PublicKeyDer(key.get());
  r.profile = *profiles_.Find("server");
  r.requester = {IssuanceRequest::Requester::Kind::kAdministrator, "admin:ops", "verify:0123456789abcdef"};
  auto promise = std::make_shared<std::promise<absl::StatusOr<store::CertificateRecord>>>();
  auto future = promise->get_future();
  ASSERT_TRUE(signer
                  ->Submit(SignJob{std::move(r), [promise](absl::StatusOr<store::CertificateRecord> rec, bool) {
                                     promise->set_value(std::move(rec));
                                   }})
                  .ok());
  auto record = future.get();
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_TRUE(record->renews_serial.empty());
  EXPECT_EQ(record->profile, "server");
  auto cert = testing::ParseDer(record->der);
  ASSERT_NE(cert, nullptr);
  EXPECT_EQ(X509_verify(cert.get(), X509_get0_pubkey(ca_->ca.certificate.get())), 1);
  EXPECT_EQ(X509_NAME_cmp(X509_get_subject_name(cert.get()), name.get()), 0);
  EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(cert.get()), key.get()), 1);
}

TEST_F(BatchSignerTest, FullQueueIsResourceExhaustedAndShutdownDrains) {
  auto signer = BatchSigner::Create(builder_.get(), store_.get(),
                                    {.workers = 1, .max_batch = 1, .queue_size = 2});
  std::vector<std::future<std::pair<absl::StatusOr<store::CertificateRecord>, bool>>> accepted;
  int exhausted = 0;
  for (int i = 0; i < 200; ++i) {
    auto [job, f] = Job("q" + std::to_string(i));
    absl::Status st = signer->Submit(std::move(job));
    if (st.ok()) {
      accepted.push_back(std::move(f));
    } else {
      EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
      EXPECT_THAT(std::string(st.message()), ::testing::HasSubstr("signing queue is full"));
      ++exhausted;
    }
  }
  EXPECT_GT(exhausted, 0);
  signer->Shutdown();
  for (auto& f : accepted) EXPECT_TRUE(f.get().first.ok());  // every accepted job finished
  EXPECT_EQ(*store_->Count(), static_cast<int64_t>(accepted.size()));
  auto [late, fl] = Job("late");
  EXPECT_EQ(signer->Submit(std::move(late)).code(), absl::StatusCode::kUnavailable);
}

// A caller that bounds its own in-flight requests (a stream's window) is queued even when the queue is full; a
// unary caller is refused at the same moment. The worker lingers for a full batch, so the queue stays full.
TEST_F(BatchSignerTest, WaitAdmissionIsQueuedBeyondAFullQueue) {
  constexpr int kBatch = 40;
  auto signer = BatchSigner::Create(builder_.get(), store_.get(),
                                    {.workers = 1, .max_batch = kBatch, .max_linger = absl::Seconds(60),
                                     .queue_size = 1});
  std::vector<std::future<std::pair<absl::StatusOr<store::CertificateRecord>, bool>>> accepted;
  auto [first, f0] = Job("unary-0");
  ASSERT_TRUE(signer->Submit(std::move(first)).ok());
  accepted.push_back(std::move(f0));
  auto [refused, fr] = Job("unary-1");
  absl::Status st = signer->Submit(std::move(refused));
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  EXPECT_THAT(std::string(st.message()), ::testing::HasSubstr("signing queue is full (1 requests)"));
  for (int i = 1; i < kBatch; ++i) {
    auto [job, f] = Job("stream-" + std::to_string(i));
    ASSERT_TRUE(signer->Submit(std::move(job), BatchSigner::Admission::kAlways).ok()) << i;
    accepted.push_back(std::move(f));
  }
  for (auto& f : accepted) {
    auto [record, replayed] = f.get();
    EXPECT_TRUE(record.ok()) << record.status();
  }
  EXPECT_EQ(*store_->Count(), kBatch);
  signer->Shutdown();
  auto [late, fl] = Job("late");
  EXPECT_EQ(signer->Submit(std::move(late), BatchSigner::Admission::kAlways).code(), absl::StatusCode::kUnavailable);
}

class BatchSignerStoreFailureTest : public BatchSignerTest {
 protected:
  static constexpr int kBatch = 8;
  // One worker that waits (up to a minute) until kBatch jobs are queued: every round below is exactly one batch.
  void SetUp() override {
    BatchSignerTest::SetUp();
    signer_ = BatchSigner::Create(builder_.get(), store_.get(),
                                  {.workers = 1, .max_batch = kBatch, .max_linger = absl::Seconds(60)});
  }
  std::vector<std::pair<absl::StatusOr<store::CertificateRecord>, bool>> Round(const std::string& prefix) {
    std::vector<std::future<std::pair<absl::StatusOr<store::CertificateRecord>, bool>>> futures;
    for (int i = 0; i < kBatch; ++i) {
      auto [job, f] = Job(prefix + "-" + std::to_string(i));
      EXPECT_TRUE(signer_->Submit(std::move(job)).ok());
      futures.push_back(std::move(f));
    }
    std::vector<std::pair<absl::StatusOr<store::CertificateRecord>, bool>> out;
    for (auto& f : futures) out.push_back(f.get());
    return out;
  }
  // ExpectRoundFails: every request of one round fails with UNAVAILABLE saying `why`, and none gets a certificate.
  void ExpectRoundFails(const std::string& prefix, const std::string& why) {
    for (auto& [record, replayed] : Round(prefix)) {
      ASSERT_FALSE(record.ok()) << "certificate released although the batch failed: " << record->serial_hex;
      EXPECT_EQ(record.status().code(), absl::StatusCode::kUnavailable) << record.status();
      EXPECT_THAT(std::string(record.status().message()), ::testing::HasSubstr(why));
      EXPECT_FALSE(replayed);
    }
  }
  // ExpectRecoveredAndIssues: with the failure removed, the same request ids are issued (the failed round left
  // no trace that would make them replays) and recorded.
  void ExpectRecoveredAndIssues(const std::string& prefix, int64_t rows_before) {
    for (auto& [record, replayed] : Round(prefix)) {
      ASSERT_TRUE(record.ok()) << record.status();
      EXPECT_FALSE(replayed);
      auto stored = store_->FindBySerial(ca_->ca.issuer_id, record->serial_hex);
      ASSERT_TRUE(stored.ok() && stored->has_value()) << record->serial_hex;
      EXPECT_EQ((*stored)->der, record->der);
    }
    EXPECT_EQ(*store_->Count(), rows_before + kBatch);
  }
  std::unique_ptr<BatchSigner> signer_;
};

// A real SQLite failure at COMMIT: an AFTER INSERT trigger (added by another connection, as an operator or a
// broken migration would) writes a row that violates a deferred foreign key, which SQLite checks only at COMMIT.
// Every request of the batch fails with UNAVAILABLE, none gets certificate bytes, nothing is recorded.
TEST_F(BatchSignerStoreFailureTest, FailedCommitFailsEveryRequestOfTheBatchAndReleasesNothing) {
  ASSERT_EQ(testing::SqliteExec(db_path_, R"sql(
      CREATE TABLE t_parent (id INTEGER PRIMARY KEY);
      CREATE TABLE t_child (parent INTEGER REFERENCES t_parent (id) DEFERRABLE INITIALLY DEFERRED);
      CREATE TRIGGER t_fail_commit AFTER INSERT ON certificates BEGIN INSERT INTO t_child VALUES (42); END;)sql"),
            "");
  ExpectRoundFails("commit", "certificate not issued: store: commit: FOREIGN KEY constraint failed");
  EXPECT_EQ(*store_->Count(), 0);
  EXPECT_EQ(testing::SqliteScalar(db_path_, "SELECT COUNT(*) FROM t_child"), "0");

  ASSERT_EQ(testing::SqliteExec(db_path_, "DROP TRIGGER t_fail_commit"), "");
  ExpectRecoveredAndIssues("commit", 0);
}

// A real SQLite failure in the middle of a batch: the fifth INSERT is aborted by a trigger after four rows of the
// same transaction were written. Those four are rolled back with it; all eight requests fail.
TEST_F(BatchSignerStoreFailureTest, InsertFailingMidBatchRollsBackTheWholeBatch) {
  for (auto& [record, replayed] : Round("warm")) ASSERT_TRUE(record.ok()) << record.status();
  ASSERT_EQ(testing::SqliteExec(db_path_, R"sql(
      CREATE TRIGGER t_fail_insert BEFORE INSERT ON certificates WHEN NEW.request_id = 'mid-4'
      BEGIN SELECT RAISE(ABORT, 'disk controller on fire'); END;)sql"),
            "");
  ExpectRoundFails("mid", "certificate not issued: store: insert: disk controller on fire");
  EXPECT_EQ(*store_->Count(), kBatch);  // only the warm-up batch
  EXPECT_EQ(store_->ReadAfter(0, 100)->size(), static_cast<size_t>(kBatch));  // the warm-up batch's ISSUED
  EXPECT_EQ(testing::SqliteScalar(db_path_, "SELECT COUNT(*) FROM certificates WHERE request_id LIKE 'mid-%'"), "0");

  ASSERT_EQ(testing::SqliteExec(db_path_, "DROP TRIGGER t_fail_insert"), "");
  ExpectRecoveredAndIssues("mid", kBatch);
}

}  // namespace
}  // namespace linesign::issuance
