#include "server/auth/authenticator.h"

#include "common/openssl_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/tls/tls_pki.h"
#include "tests/testing/test_ca.h"

namespace linesign::auth {
namespace {

using ::testing::HasSubstr;

class AuthenticatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    now_ = absl::Now();
    dir_ = testing::TempDir("linesign-auth");
    auto ca = tls::MakeTlsCa("station CA", now_ - absl::Hours(1), now_ + absl::Hours(24 * 30));
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = *ca;
    ASSERT_TRUE(WriteFile(dir_ + "/ca.pem", ca_.certificate_pem).ok());
    config_.set_client_ca_file(dir_ + "/ca.pem");
    config_.set_identity("subject_cn");
  }
  tls::KeyAndCertificate Leaf(const tls::KeyAndCertificate& ca, tls::LeafSpec spec) {
    if (spec.not_before == absl::Time()) spec.not_before = now_ - absl::Minutes(5);
    if (spec.not_after == absl::Time()) spec.not_after = now_ + absl::Hours(24);
    auto leaf = tls::IssueLeaf(ca, spec);
    EXPECT_TRUE(leaf.ok()) << leaf.status();
    return leaf.value_or(tls::KeyAndCertificate{});
  }
  std::unique_ptr<Authenticator> Make() {
    auto a = Authenticator::Create(config_);
    EXPECT_TRUE(a.ok()) << a.status();
    return a.ok() ? *std::move(a) : nullptr;
  }

  absl::Time now_;
  std::string dir_;
  tls::KeyAndCertificate ca_;
  v1::TlsConfig config_;
};

TEST_F(AuthenticatorTest, IdentityFromSubjectCn) {
  auto leaf = Leaf(ca_, {.common_name = "station-7"});
  auto id = Make()->Authenticate(leaf.certificate_pem, leaf.certificate_pem, now_);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, "station-7");
}

TEST_F(AuthenticatorTest, IdentityFromUriAndDnsSan) {
  auto leaf = Leaf(ca_, {.common_name = "cn-ignored", .dns_names = {"st1.line4.example"},
                         .uris = {"spiffe://factory/line4/st1"}});
  config_.set_identity("uri_san");
  auto id = Make()->Authenticate(leaf.certificate_pem, "", now_);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, "spiffe://factory/line4/st1");
  config_.set_identity("dns_san");
  id = Make()->Authenticate(leaf.certificate_pem, "", now_);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, "st1.line4.example");
}

TEST_F(AuthenticatorTest, MissingUriSanIsRefused) {
  auto leaf = Leaf(ca_, {.common_name = "station-7"});
  config_.set_identity("uri_san");
  auto id = Make()->Authenticate(leaf.certificate_pem, "", now_);
  EXPECT_EQ(id.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(id.status().message(), HasSubstr("no URI SAN"));
}

TEST_F(AuthenticatorTest, NoCertificate) {
  auto id = Make()->Authenticate("", "", now_);
  EXPECT_EQ(id.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(id.status().message(), HasSubstr("no client certificate"));
}

TEST_F(AuthenticatorTest, OtherCaIsRefused) {
  auto other = tls::MakeTlsCa("rogue CA", now_ - absl::Hours(1), now_ + absl::Hours(24));
  ASSERT_TRUE(other.ok());
  auto leaf = Leaf(*other, {.common_name = "station-1"});
  auto id = Make()->Authenticate(leaf.certificate_pem, leaf.certificate_pem + other->certificate_pem, now_);
  EXPECT_EQ(id.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(id.status().message(), HasSubstr("not issued by a trusted station CA"));
}

TEST_F(AuthenticatorTest, ExpiredIsRefused) {
  auto leaf = Leaf(ca_, {.common_name = "station-1", .not_before = now_ - absl::Hours(2),
                         .not_after = now_ - absl::Hours(1)});
  auto id = Make()->Authenticate(leaf.certificate_pem, "", now_);
  EXPECT_EQ(id.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(id.status().message(), HasSubstr("expired at"));
}

TEST_F(AuthenticatorTest, ServerCertificateIsNotForClients) {
  auto leaf = Leaf(ca_, {.common_name = "station-1", .server = true});
  auto id = Make()->Authenticate(leaf.certificate_pem, "", now_);
  EXPECT_EQ(id.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(id.status().message(), HasSubstr("not for client authentication"));
}

TEST_F(AuthenticatorTest, RevokedIsRefusedOthersPass) {
  auto revoked = Leaf(ca_, {.common_name = "station-lost"});
  auto good = Leaf(ca_, {.common_name = "station-ok"});
  auto serial = tls::SerialHex(revoked.certificate_pem);
  ASSERT_TRUE(serial.ok());
  auto crl = tls::MakeCrl(ca_, {*serial}, now_ - absl::Minutes(1));
  ASSERT_TRUE(crl.ok()) << crl.status();
  ASSERT_TRUE(WriteFile(dir_ + "/ca.crl", *crl).ok());
  config_.add_crl_files(dir_ + "/ca.crl");
  auto auth = Make();
  auto id = auth->Authenticate(revoked.certificate_pem, "", now_);
  EXPECT_EQ(id.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(id.status().message(), HasSubstr("is revoked"));
  EXPECT_THAT(id.status().message(), HasSubstr(*serial));
  auto ok = auth->Authenticate(good.certificate_pem, "", now_);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, "station-ok");
}

TEST_F(AuthenticatorTest, CachedIdentityStillExpires) {
  auto leaf = Leaf(ca_, {.common_name = "station-1", .not_after = now_ + absl::Hours(1)});
  auto auth = Make();
  ASSERT_TRUE(auth->Authenticate(leaf.certificate_pem, "", now_).ok());
  auto later = auth->Authenticate(leaf.certificate_pem, "", now_ + absl::Hours(2));
  EXPECT_EQ(later.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(later.status().message(), HasSubstr("expired"));
}

TEST_F(AuthenticatorTest, InsecureIsAnonymous) {
  v1::TlsConfig insecure;
  insecure.set_insecure(true);
  auto a = Authenticator::Create(insecure);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*(*a)->Authenticate("", "", now_), "anonymous");
}

TEST_F(AuthenticatorTest, BadBundleNamesTheField) {
  ASSERT_TRUE(WriteFile(dir_ + "/empty.pem", "not a certificate\n").ok());
  config_.set_client_ca_file(dir_ + "/empty.pem");
  auto a = Authenticator::Create(config_);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(a.status().message(), HasSubstr("tls.client_ca_file"));
}

}  // namespace
}  // namespace linesign::auth
