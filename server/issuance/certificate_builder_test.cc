#include "server/issuance/certificate_builder.h"

#include <openssl/x509v3.h>

#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/config/config.h"
#include "server/csr/csr.h"
#include "tests/testing/certs.h"
#include "tests/testing/software_ca.h"

namespace linesign::issuance {
namespace {

v1::ServerConfig Config() {
  v1::ServerConfig c;
  auto& p = (*c.mutable_profiles())["device"];
  p.set_validity_days(10);
  p.add_san_types("dns");
  config::ApplyDefaults(&c);
  return c;
}

// Request checks `der` against the "device" profile of `config` and makes the request for a new certificate.
IssuanceRequest Request(const std::string& der, const v1::ServerConfig& config) {
  std::shared_ptr<const profile::Profile> profile = *profile::Profile::Compile("device", config.profiles().at("device"));
  auto checked = csr::CheckCsr(der, *profile);
  EXPECT_TRUE(checked.ok()) << checked.status();
  return csr::MakeIssuanceRequest(*std::move(checked), profile, "station", "r1");
}

class CertificateBuilderTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CertificateBuilderTest, BuildsACertificateOpenSslAcceptsForEveryCaKey) {
  auto ca = testing::SoftwareCa::Create(GetParam());
  ASSERT_NE(ca, nullptr);
  v1::ServerConfig config = Config();
  auto builder = CertificateBuilder::Create(&ca->ca, ca->signer.get());
  ASSERT_TRUE(builder.ok()) << builder.status();
  IssuanceRequest request = Request(testing::Csr("ec-p256", "/CN=UNIT", {"DNS:a.example"}), config);
  absl::Time now = absl::FromUnixSeconds(1800000000);
  std::string serial = NewSerial();
  auto cert = (*builder)->Issue(request, serial, now);
  ASSERT_TRUE(cert.ok()) << cert.status();
  auto x509 = testing::ParseDer(cert->der);
  ASSERT_NE(x509, nullptr);
  EXPECT_EQ(X509_verify(x509.get(), X509_get0_pubkey(ca->ca.certificate.get())), 1);
  EXPECT_EQ(CertificateDer(x509.get()), cert->der);  // OpenSSL re-encodes it to the same bytes: valid DER
  EXPECT_EQ(X509_check_issued(ca->ca.certificate.get(), x509.get()), X509_V_OK);
  EXPECT_EQ(cert->not_before, now - absl::Seconds(300));
  EXPECT_EQ(cert->not_after, now + absl::Hours(240));
  EXPECT_EQ(ASN1_TIME_cmp_time_t(X509_get0_notAfter(x509.get()), absl::ToTimeT(cert->not_after)), 0);
}

TEST_P(CertificateBuilderTest, ValidityIsCappedAtTheCaExpiry) {
  auto ca = testing::SoftwareCa::Create(GetParam());
  v1::ServerConfig config = Config();
  auto builder = CertificateBuilder::Create(&ca->ca, ca->signer.get());
  absl::Time late = ca->ca.not_after - absl::Hours(24);
  auto cert = (*builder)->Issue(Request(testing::Csr("ec-p256", "/CN=LATE"), config), NewSerial(), late);
  ASSERT_TRUE(cert.ok());
  EXPECT_EQ(cert->not_after, ca->ca.not_after);
}

// A request without a CSR: typed SANs are encoded by the builder, a validity override is capped by the profile,
// and what is signed still passes the strict rules.
TEST_P(CertificateBuilderTest, IssuesWithoutACsrFromTypedSans) {
  auto ca = testing::SoftwareCa::Create(GetParam());
  v1::ServerConfig config = Config();
  auto builder = CertificateBuilder::Create(&ca->ca, ca->signer.get());
  IssuanceRequest request = Request(testing::Csr("ec-p256", "/CN=TYPED"), config);
  request.csr_sha256.clear();
  request.sans = {{csr::SanType::kDns, "t.example"}, {csr::SanType::kIp, std::string("\xc0\x00\x02\x01", 4)}};
  absl::Time now = absl::FromUnixSeconds(1800000000);
  request.validity = absl::Hours(1);
  auto cert = (*builder)->Issue(request, NewSerial(), now);
  ASSERT_TRUE(cert.ok()) << cert.status();
  EXPECT_EQ(cert->not_after, now + absl::Hours(1));
  auto x509 = testing::ParseDer(cert->der);
  ASSERT_NE(x509, nullptr);
  EXPECT_EQ(X509_verify(x509.get(), X509_get0_pubkey(ca->ca.certificate.get())), 1);
  EXPECT_EQ(X509_check_host(x509.get(), "t.example", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ip_asc(x509.get(), "192.0.2.1", 0), 1);
  request.validity = absl::Hours(24 * 1000);  // longer than the profile's: the profile wins
  cert = (*builder)->Issue(request, NewSerial(), now);
  ASSERT_TRUE(cert.ok()) << cert.status();
  EXPECT_EQ(cert->not_after, now + absl::Hours(240));
  // The strict rules hold for requests without a CSR too.
  request.sans = {{csr::SanType::kDns, "bad name.example"}};
  EXPECT_EQ((*builder)->Issue(request, NewSerial(), now).status().code(), absl::StatusCode::kInvalidArgument);
  request.profile = nullptr;
  EXPECT_THAT(std::string((*builder)->Issue(request, NewSerial(), now).status().message()),
              ::testing::HasSubstr("names no profile"));
}

INSTANTIATE_TEST_SUITE_P(CaKeys, CertificateBuilderTest, ::testing::Values("ec-p256", "ec-p384", "rsa-2048"),
                         [](const auto& i) { return i.param == "ec-p256" ? "EcP256" : i.param == "ec-p384" ? "EcP384" : "Rsa2048"; });

TEST(SerialTest, PositiveSixteenOctetsAndDistinct) {
  std::set<std::string> seen;
  for (int i = 0; i < 10000; ++i) {
    std::string s = NewSerial();
    ASSERT_EQ(s.size(), 16u);
    ASSERT_EQ(static_cast<uint8_t>(s[0]) & 0x80, 0);
    ASSERT_NE(s[0], 0);
    seen.insert(s);
  }
  EXPECT_EQ(seen.size(), 10000u);
}

// The first 6 octets are the time in milliseconds, so serials of later certificates sort after earlier ones (the
// store's index then takes a batch on one page); the other 10 octets differ between serials of the same
// millisecond, and their bits are balanced (a CSPRNG's, not a counter's).
TEST(SerialTest, TimeFirstThenEightyRandomBits) {
  const absl::Time t = absl::FromUnixMillis(1764633600123);  // 2025-12-02T00:00:00.123Z
  const std::string a = NewSerial(t);
  EXPECT_EQ(Hex(a.substr(0, 6)), "019ADC5BE07B");
  EXPECT_LT(a, NewSerial(t + absl::Milliseconds(1)));
  EXPECT_GT(a, NewSerial(t - absl::Milliseconds(1)));
  std::set<std::string> tails;
  int64_t ones = 0;
  constexpr int kSerials = 2000;
  for (int i = 0; i < kSerials; ++i) {
    std::string s = NewSerial(t);
    ASSERT_EQ(s.substr(0, 6), a.substr(0, 6));
    tails.insert(s.substr(6));
    for (unsigned char c : s.substr(6)) ones += __builtin_popcount(c);
  }
  EXPECT_EQ(tails.size(), static_cast<size_t>(kSerials));
  const double share = static_cast<double>(ones) / (kSerials * 80);
  EXPECT_GT(share, 0.48);
  EXPECT_LT(share, 0.52);
  // Before the epoch or far beyond 2^47 ms the serial is still positive and 16 octets long.
  for (absl::Time odd : {absl::UnixEpoch() - absl::Hours(1), absl::FromUnixMillis(int64_t{1} << 50)}) {
    std::string s = NewSerial(odd);
    ASSERT_EQ(s.size(), 16u);
    EXPECT_EQ(static_cast<uint8_t>(s[0]) & 0x80, 0);
    EXPECT_NE(s[0], 0);
  }
}

}  // namespace
}  // namespace linesign::issuance
