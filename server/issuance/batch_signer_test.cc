#include "server/issuance/batch_signer.h"

#include <atomic>
#include <future>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/config/config.h"
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
    config::ApplyDefaults(&config_);
    auto builder = CertificateBuilder::Create(&ca_->ca, ca_->signer.get(), config_);
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
    job.csr = csr != nullptr ? *csr : csr_;
    job.profile = profile;
    job.station = "station";
    job.request_id = request_id;
    job.done = [promise](absl::StatusOr<store::CertificateRecord> r, bool replayed) {
      promise->set_value({std::move(r), replayed});
    };
    return {std::move(job), promise->get_future()};
  }

  v1::ServerConfig config_;
  std::unique_ptr<testing::SoftwareCa> ca_;
  std::unique_ptr<CertificateBuilder> builder_;
  std::string db_path_;
  std::unique_ptr<store::SqliteStore> store_;
  csr::CheckedCsr csr_;
};

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
  // Each certificate's ISSUED event was recorded with it.
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

// The record's SANs are typed at the one place the record is built: type before the first ':', value after it.
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
  EXPECT_EQ(testing::SqliteScalar(db_path_, "SELECT COUNT(*) FROM events"), std::to_string(kBatch));
  EXPECT_EQ(testing::SqliteScalar(db_path_, "SELECT COUNT(*) FROM certificates WHERE request_id LIKE 'mid-%'"), "0");

  ASSERT_EQ(testing::SqliteExec(db_path_, "DROP TRIGGER t_fail_insert"), "");
  ExpectRecoveredAndIssues("mid", kBatch);
}

}  // namespace
}  // namespace linesign::issuance
