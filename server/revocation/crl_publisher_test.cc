#include "server/revocation/crl_publisher.h"

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/testing/fake_clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/store/sqlite/sqlite_store.h"
#include "tests/testing/software_ca.h"
#include "tests/testing/test_ca.h"

namespace linesign::revocation {
namespace {

using ::testing::HasSubstr;

int64_t CrlNumber(const std::string& der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  OsslPtr<X509_CRL> crl(d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size())));
  if (crl == nullptr) return -1;
  auto* n = static_cast<ASN1_INTEGER*>(X509_CRL_get_ext_d2i(crl.get(), NID_crl_number, nullptr, nullptr));
  int64_t v = n == nullptr ? -1 : ASN1_INTEGER_get(n);
  ASN1_INTEGER_free(n);
  return v;
}

int Entries(const std::string& der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  OsslPtr<X509_CRL> crl(d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size())));
  return crl == nullptr ? -1 : sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl.get()));
}

class CrlPublisherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ca_ = testing::SoftwareCa::Create("ec-p256");
    ASSERT_NE(ca_, nullptr);
    auto builder = CrlBuilder::Create(&ca_->ca, ca_->signer.get());
    ASSERT_TRUE(builder.ok());
    builder_ = *std::move(builder);
    path_ = testing::TempDir("crl-publisher") + "/db";
    store_ = Open();
  }
  std::unique_ptr<store::SqliteStore> Open() {
    auto s = store::SqliteStore::Open(path_, &clock_);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *std::move(s) : nullptr;
  }
  std::unique_ptr<CrlPublisher> Publisher(store::RevocationStore* store) {
    auto p = CrlPublisher::Create(builder_.get(), store, CrlPublisher::Options{});
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? *std::move(p) : nullptr;
  }
  // Record certificates "S0".."S<n-1>" (hex serials 1000..) under the CA's issuer id.
  std::vector<std::string> Record(int n) {
    store::Batch batch;
    std::vector<std::string> serials;
    for (int i = 0; i < n; ++i) {
      store::BatchEntry e;
      e.cert.issuer_id = ca_->ca.issuer_id;
      e.cert.serial_hex = absl::StrFormat("%X", 0x100000 + recorded_ + i);
      e.cert.subject = "CN=x";
      e.cert.station = "station-1";
      e.cert.profile = "device";
      e.cert.request_id = absl::StrCat("r", recorded_ + i);
      e.cert.der = "x";
      serials.push_back(e.cert.serial_hex);
      batch.entries.push_back(std::move(e));
    }
    recorded_ += n;
    EXPECT_TRUE(store_->RecordBatch(batch).ok());
    return serials;
  }
  void Revoke(store::RevocationStore* store, const std::string& serial) {
    auto r = store->Revoke({.issuer_id = ca_->ca.issuer_id, .serial_hex = serial, .reason = 1, .at = clock_.Now()});
    ASSERT_TRUE(r.ok()) << r.status();
  }

  testing::FakeClock clock_;
  std::unique_ptr<testing::SoftwareCa> ca_;
  std::unique_ptr<CrlBuilder> builder_;
  std::string path_;
  std::unique_ptr<store::SqliteStore> store_;
  int recorded_ = 0;
};

// Before its first round there is no CRL, and the reason says so; the first round makes number 1; a publisher
// started later on the same database (a restart) serves that CRL at once and goes on from its number.
TEST_F(CrlPublisherTest, TheFirstRoundMakesACrlAndARestartServesItAtOnce) {
  auto publisher = Publisher(store_.get());
  auto none = publisher->CurrentDer();
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(none.status().message(), HasSubstr("no CRL has been made yet"));
  ASSERT_TRUE(publisher->Refresh(clock_.Now()).ok());
  auto first = publisher->Current();
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->number, 1);
  EXPECT_EQ(CrlNumber(first->der), 1);
  EXPECT_EQ(first->this_update, clock_.Now());
  EXPECT_EQ(first->next_update, clock_.Now() + absl::Hours(168));
  EXPECT_EQ(publisher->generations(), 1);
  // Nothing changed: another round makes nothing.
  clock_.Advance(absl::Hours(1));
  ASSERT_TRUE(publisher->Refresh(clock_.Now()).ok());
  EXPECT_EQ(publisher->generations(), 1);

  publisher.reset();
  store_.reset();
  store_ = Open();
  auto restarted = Publisher(store_.get());
  auto served = restarted->Current();
  ASSERT_TRUE(served.ok()) << served.status();  // before any round
  EXPECT_EQ(served->der, first->der);
  Revoke(store_.get(), Record(1)[0]);
  ASSERT_TRUE(restarted->Refresh(clock_.Now()).ok());
  auto second = restarted->Current();
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->number, 2);
  EXPECT_EQ(Entries(second->der), 1);
}

// 1,000 revocations within one second (each followed by a round, as the task would run) produce no CRL until
// min_interval has passed since the last one, then ONE CRL listing all of them.
TEST_F(CrlPublisherTest, ABurstOfRevocationsIsCoalesced) {
  auto publisher = Publisher(store_.get());
  ASSERT_TRUE(publisher->Refresh(clock_.Now()).ok());
  ASSERT_EQ(publisher->generations(), 1);
  std::vector<std::string> serials = Record(1000);
  for (const std::string& serial : serials) {
    clock_.Advance(absl::Microseconds(900));
    Revoke(store_.get(), serial);
    ASSERT_TRUE(publisher->Refresh(clock_.Now()).ok());
  }
  EXPECT_EQ(publisher->generations(), 1);  // 0.9 s after the first: coalescing
  clock_.Advance(absl::Milliseconds(100));
  ASSERT_TRUE(publisher->Refresh(clock_.Now()).ok());
  EXPECT_EQ(publisher->generations(), 2);
  auto crl = publisher->Current();
  ASSERT_TRUE(crl.ok());
  EXPECT_EQ(crl->number, 2);
  EXPECT_EQ(Entries(crl->der), 1000);
  ASSERT_TRUE(publisher->Refresh(clock_.Now() + absl::Seconds(5)).ok());
  EXPECT_EQ(publisher->generations(), 2);  // nothing new to say
}

// A CRL is made again once less than refresh_before is left until its nextUpdate, with no revocation.
TEST_F(CrlPublisherTest, ACrlIsRemadeBeforeItsNextUpdate) {
  auto publisher = Publisher(store_.get());
  ASSERT_TRUE(publisher->Refresh(clock_.Now()).ok());
  auto first = publisher->Current();
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(publisher->Refresh(first->next_update - absl::Hours(84) - absl::Seconds(1)).ok());
  EXPECT_EQ(publisher->generations(), 1);
  ASSERT_TRUE(publisher->Refresh(first->next_update - absl::Hours(84)).ok());
  EXPECT_EQ(publisher->generations(), 2);
  auto second = publisher->Current();
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->number, 2);
  EXPECT_EQ(second->next_update, first->next_update + absl::Hours(84));
}

// Two processes on one database: a revocation recorded by either is seen by both; numbers only grow; a CRL one
// made is adopted by the other instead of making one more.
TEST_F(CrlPublisherTest, TwoProcessesShareOneNumberSequence) {
  auto other_store = Open();
  auto a = Publisher(store_.get());
  auto b = Publisher(other_store.get());
  ASSERT_TRUE(a->Refresh(clock_.Now()).ok());
  ASSERT_TRUE(b->Refresh(clock_.Now()).ok());  // adopts a's
  EXPECT_EQ(b->generations(), 0);
  EXPECT_EQ(b->Current()->number, 1);
  Revoke(other_store.get(), Record(1)[0]);
  clock_.Advance(absl::Seconds(2));
  ASSERT_TRUE(a->Refresh(clock_.Now()).ok());  // the revocation came from b's process
  EXPECT_EQ(a->generations(), 2);
  EXPECT_EQ(a->Current()->number, 2);
  EXPECT_EQ(Entries(a->Current()->der), 1);
  ASSERT_TRUE(b->Refresh(clock_.Now()).ok());
  EXPECT_EQ(b->generations(), 0);
  EXPECT_EQ(b->Current()->der, a->Current()->der);
}

TEST_F(CrlPublisherTest, OptionsAreChecked) {
  CrlPublisher::Options bad;
  bad.refresh_before = bad.validity;
  auto p = CrlPublisher::Create(builder_.get(), store_.get(), bad);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  bad = {};
  bad.min_interval = absl::ZeroDuration();
  EXPECT_EQ(CrlPublisher::Create(builder_.get(), store_.get(), bad).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace linesign::revocation
