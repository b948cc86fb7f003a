#include "server/auth/authenticator.h"

#include <cctype>
#include <optional>

#include "absl/strings/str_format.h"
#include "common/openssl_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/auth/station_credential.h"
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
    // linesign's own CAs: an offline root and the issuing CA under it (ca.chain_file holds the issuing CA only).
    auto root = tls::MakeTlsCa("linesign root CA", now_ - absl::Hours(1), now_ + absl::Hours(24 * 60), 1);
    ASSERT_TRUE(root.ok()) << root.status();
    root_ = *root;
    auto issuing = tls::IssueCa(root_, "linesign issuing CA", now_ - absl::Hours(1), now_ + absl::Hours(24 * 30));
    ASSERT_TRUE(issuing.ok()) << issuing.status();
    issuing_ = *issuing;
    chain_file_ = dir_ + "/chain.pem";
    ASSERT_TRUE(WriteFile(chain_file_, issuing_.certificate_pem).ok());
  }
  tls::KeyAndCertificate Leaf(const tls::KeyAndCertificate& ca, tls::LeafSpec spec) {
    if (spec.not_before == absl::Time()) spec.not_before = now_ - absl::Minutes(5);
    if (spec.not_after == absl::Time()) spec.not_after = now_ + absl::Hours(24);
    auto leaf = tls::IssueLeaf(ca, spec);
    EXPECT_TRUE(leaf.ok()) << leaf.status();
    return leaf.value_or(tls::KeyAndCertificate{});
  }
  std::unique_ptr<Authenticator> Make() {
    auto a = Authenticator::Create(config_, chain_file_);
    EXPECT_TRUE(a.ok()) << a.status();
    return a.ok() ? *std::move(a) : nullptr;
  }

  absl::Time now_;
  std::string dir_;
  tls::KeyAndCertificate ca_;
  tls::KeyAndCertificate root_;     // linesign's root
  tls::KeyAndCertificate issuing_;  // linesign's issuing CA (issues device certificates)
  std::string chain_file_;
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

// The server's own requests are recorded under "linesign:server": no station identity may start with "linesign:".
TEST_F(AuthenticatorTest, ReservedServerIdentityPrefixIsRefused) {
  auto leaf = Leaf(ca_, {.common_name = "LineSign:server", .uris = {"linesign:server"}});
  for (const char* source : {"subject_cn", "uri_san"}) {
    config_.set_identity(source);
    auto id = Make()->Authenticate(leaf.certificate_pem, "", now_);
    EXPECT_EQ(id.status().code(), absl::StatusCode::kUnauthenticated) << source;
    EXPECT_THAT(id.status().message(), HasSubstr("reserved for the server's own requests")) << source;
  }
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
  auto a = Authenticator::Create(insecure, "");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*(*a)->Authenticate("", "", now_), "anonymous");
}

TEST_F(AuthenticatorTest, BadBundleNamesTheField) {
  ASSERT_TRUE(WriteFile(dir_ + "/empty.pem", "not a certificate\n").ok());
  config_.set_client_ca_file(dir_ + "/empty.pem");
  auto a = Authenticator::Create(config_, chain_file_);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(a.status().message(), HasSubstr("tls.client_ca_file"));
}

// Who is a station: a client CA bundle that trusts linesign's issuing CA, directly or through the root above it,
// would let every device certificate authenticate; it is refused unless the station marker is required.
TEST_F(AuthenticatorTest, BundleTrustingLinesignsCasNeedsTheStationMarker) {
  for (const auto* linesign_ca : {&issuing_, &root_}) {
    ASSERT_TRUE(WriteFile(dir_ + "/both.pem", ca_.certificate_pem + linesign_ca->certificate_pem).ok());
    config_.set_client_ca_file(dir_ + "/both.pem");
    config_.set_require_station_marker(false);
    auto a = Authenticator::Create(config_, chain_file_);
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(a.status().message(),
                HasSubstr("tls.client_ca_file: " + dir_ + "/both.pem trusts linesign's issuing CA "
                          "'CN=linesign issuing CA' (ca.chain_file " + chain_file_ + ") or a CA above it"));
    EXPECT_THAT(a.status().message(), HasSubstr("set tls.require_station_marker: true"));
    config_.set_require_station_marker(true);
    EXPECT_TRUE(Authenticator::Create(config_, chain_file_).ok());
  }
}

// The same CA re-keyed (same name, new key) in the bundle is linesign's CA too.
TEST_F(AuthenticatorTest, BundleWithARekeyedIssuingCaNeedsTheStationMarker) {
  auto rekeyed = tls::IssueCa(root_, "linesign issuing CA", now_ - absl::Hours(1), now_ + absl::Hours(24));
  ASSERT_TRUE(rekeyed.ok());
  ASSERT_TRUE(WriteFile(dir_ + "/rekeyed.pem", ca_.certificate_pem + rekeyed->certificate_pem).ok());
  config_.set_client_ca_file(dir_ + "/rekeyed.pem");
  EXPECT_EQ(Authenticator::Create(config_, chain_file_).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(AuthenticatorTest, MarkerRequiredRefusesDeviceCertificatesByCnUriAndDnsSan) {
  ASSERT_TRUE(WriteFile(dir_ + "/both.pem", ca_.certificate_pem + root_.certificate_pem).ok());
  config_.set_client_ca_file(dir_ + "/both.pem");
  config_.set_require_station_marker(true);
  // A device certificate as SignCsr would make it: clientAuth, CN/URI/DNS "admin", from the issuing CA.
  auto device = Leaf(issuing_, {.common_name = "admin", .dns_names = {"admin"}, .uris = {"admin"}});
  for (const char* source : {"subject_cn", "uri_san", "dns_san"}) {
    config_.set_identity(source);
    auto id = Make()->Authenticate(device.certificate_pem, device.certificate_pem + issuing_.certificate_pem, now_);
    EXPECT_EQ(id.status().code(), absl::StatusCode::kUnauthenticated) << source;
    EXPECT_THAT(id.status().message(),
                HasSubstr("client certificate 'CN=admin' is a device certificate (issued by linesign's issuing CA "
                          "'CN=linesign issuing CA'): device certificates never authenticate"))
        << source;
  }
  // A station credential from the station CA with the marker is a station; without it, it is not.
  config_.set_identity("subject_cn");
  auto auth = Make();
  auto station = Leaf(ca_, {.common_name = "admin", .station_credential = true});
  auto id = auth->Authenticate(station.certificate_pem, "", now_);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, "admin");
  auto unmarked = Leaf(ca_, {.common_name = "admin"});
  id = auth->Authenticate(unmarked.certificate_pem, "", now_);
  EXPECT_EQ(id.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(id.status().message(),
              HasSubstr(std::string("client certificate 'CN=admin' is not a station credential: it lacks the "
                                    "linesign station EKU ") + kStationEkuOid + " (tls.require_station_marker)"));
}

// Defence in depth: even a certificate from linesign's issuing CA that carries the marker (as if a profile check
// were bypassed) never authenticates.
TEST_F(AuthenticatorTest, IssuingCaCertificatesNeverAuthenticateEvenWithTheMarker) {
  ASSERT_TRUE(WriteFile(dir_ + "/all.pem", ca_.certificate_pem + root_.certificate_pem + issuing_.certificate_pem)
                  .ok());
  config_.set_client_ca_file(dir_ + "/all.pem");
  config_.set_require_station_marker(true);
  auto forged = Leaf(issuing_, {.common_name = "admin", .station_credential = true});
  auto id = Make()->Authenticate(forged.certificate_pem, "", now_);
  EXPECT_EQ(id.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(id.status().message(), HasSubstr("device certificates never authenticate"));
}

// SIGHUP: a rewritten bundle that now trusts linesign's issuing CA without the marker is refused, and the trust
// in force stays (same generation, stations still authenticate).
TEST_F(AuthenticatorTest, ReloadRefusesABundleThatNowTrustsTheIssuingCa) {
  auto auth = Make();
  auto station = Leaf(ca_, {.common_name = "station-1"});
  ASSERT_TRUE(auth->Authenticate(station.certificate_pem, "", now_).ok());
  ASSERT_TRUE(WriteFile(dir_ + "/ca.pem", ca_.certificate_pem + root_.certificate_pem).ok());
  absl::Status st = auth->Reload(config_);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("trusts linesign's issuing CA"));
  EXPECT_EQ(auth->generation(), 0u);
  auto device = Leaf(issuing_, {.common_name = "admin"});
  EXPECT_EQ(auth->Authenticate(device.certificate_pem, issuing_.certificate_pem, now_ + absl::Hours(1))
                .status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(auth->Authenticate(station.certificate_pem, "", now_ + absl::Hours(1)).ok());
}

// Trusted proxies (tls.trusted_proxies): only a proxy may forward a station certificate, and a proxy is never a
// station itself.
std::string Escape(const std::string& pem) {
  std::string out;
  for (unsigned char c : pem) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_') {
      out.push_back(static_cast<char>(c));
    } else {
      out += absl::StrFormat("%%%02X", c);
    }
  }
  return out;
}

TEST_F(AuthenticatorTest, ForwardedCertificateIsRefusedWithoutTrustedProxies) {
  auto station = Leaf(ca_, {.common_name = "station-1"});
  auto auth = Make();
  std::string header = Escape(station.certificate_pem);
  auto caller = auth->Resolve(station.certificate_pem, "", header, now_);
  EXPECT_EQ(caller.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(caller.status().message(), HasSubstr("no trusted proxy is configured"));
  auto direct = auth->Resolve(station.certificate_pem, "", std::nullopt, now_);
  ASSERT_TRUE(direct.ok()) << direct.status();
  EXPECT_EQ(direct->leaf_pem, station.certificate_pem);
  EXPECT_EQ(direct->proxy, "");
}

TEST_F(AuthenticatorTest, ForwardedCertificateIsRefusedFromAStationThatIsNotAProxy) {
  config_.add_trusted_proxies("edge-proxy");
  auto station = Leaf(ca_, {.common_name = "station-1"});
  auto victim = Leaf(ca_, {.common_name = "admin-1"});
  auto caller = Make()->Resolve(station.certificate_pem, "", Escape(victim.certificate_pem), now_);
  EXPECT_EQ(caller.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(caller.status().message(), HasSubstr("refused from 'station-1', which is not a trusted proxy"));
}

TEST_F(AuthenticatorTest, TrustedProxyForwardsTheStationCertificate) {
  config_.add_trusted_proxies("edge-proxy");
  auto proxy = Leaf(ca_, {.common_name = "edge-proxy"});
  auto station = Leaf(ca_, {.common_name = "station-1"});
  auto auth = Make();
  auto caller = auth->Resolve(proxy.certificate_pem, "", Escape(station.certificate_pem), now_);
  ASSERT_TRUE(caller.ok()) << caller.status();
  EXPECT_EQ(caller->proxy, "edge-proxy");
  auto id = auth->Authenticate(caller->leaf_pem, caller->chain_pem, now_);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, "station-1");
  // The forwarded certificate is verified like a direct one: another CA's is refused.
  auto other = tls::MakeTlsCa("rogue CA", now_ - absl::Hours(1), now_ + absl::Hours(24));
  ASSERT_TRUE(other.ok());
  auto rogue = Leaf(*other, {.common_name = "station-1"});
  auto forged = auth->Resolve(proxy.certificate_pem, "", Escape(rogue.certificate_pem), now_);
  ASSERT_TRUE(forged.ok()) << forged.status();
  EXPECT_THAT(auth->Authenticate(forged->leaf_pem, forged->chain_pem, now_).status().message(),
              HasSubstr("not issued by a trusted station CA"));
}

TEST_F(AuthenticatorTest, TrustedProxyWithoutOrWithABadHeaderIsRefused) {
  config_.add_trusted_proxies("edge-proxy");
  auto proxy = Leaf(ca_, {.common_name = "edge-proxy"});
  auto station = Leaf(ca_, {.common_name = "station-1"});
  auto auth = Make();
  struct Case {
    std::optional<std::string> header;
    std::string want;
  };
  const Case cases[] = {
      {std::nullopt, "forwarded no station certificate"},
      {std::string(), "forwarded no station certificate"},
      {std::string("abc%4"), "malformed %-escape"},
      {std::string("abc%zz"), "malformed %-escape"},
      {std::string(kMaxForwardedCertificateBytes + 1, 'A'), "at most 16384"},
      {Escape(station.certificate_pem + station.certificate_pem), "not exactly one PEM certificate"},
      {std::string("not a certificate"), "not exactly one PEM certificate"},
  };
  for (const Case& c : cases) {
    std::optional<absl::string_view> header;
    if (c.header.has_value()) header = *c.header;
    auto caller = auth->Resolve(proxy.certificate_pem, "", header, now_);
    EXPECT_EQ(caller.status().code(), absl::StatusCode::kUnauthenticated) << c.want;
    EXPECT_THAT(caller.status().message(), HasSubstr(c.want));
  }
  // A proxy whose own certificate does not verify forwards nothing.
  auto expired = Leaf(ca_, {.common_name = "edge-proxy", .not_before = now_ - absl::Hours(2),
                            .not_after = now_ - absl::Hours(1)});
  auto caller = auth->Resolve(expired.certificate_pem, "", Escape(station.certificate_pem), now_);
  EXPECT_THAT(caller.status().message(), HasSubstr("expired at"));
}

}  // namespace
}  // namespace linesign::auth
