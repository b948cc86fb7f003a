#include "server/issuance/batch_signer.h"

#include <atomic>
#include <future>
#include <set>
#include <thread>

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
      const std::string& request_id, const csr::CheckedCsr* csr = nullptr) {
    auto promise = std::make_shared<std::promise<std::pair<absl::StatusOr<store::CertificateRecord>, bool>>>();
    SignJob job;
    job.csr = csr != nullptr ? *csr : csr_;
    job.profile = "device";
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

}  // namespace
}  // namespace linesign::issuance
