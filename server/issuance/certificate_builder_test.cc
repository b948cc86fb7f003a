#include "server/issuance/certificate_builder.h"

#include <openssl/x509v3.h>

#include "gtest/gtest.h"
#include "server/config/config.h"
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

class CertificateBuilderTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CertificateBuilderTest, BuildsACertificateOpenSslAcceptsForEveryCaKey) {
  auto ca = testing::SoftwareCa::Create(GetParam());
  ASSERT_NE(ca, nullptr);
  v1::ServerConfig config = Config();
  auto builder = CertificateBuilder::Create(&ca->ca, ca->signer.get(), config);
  ASSERT_TRUE(builder.ok()) << builder.status();
  auto checked = csr::CheckCsr(testing::Csr("ec-p256", "/CN=UNIT", {"DNS:a.example"}), config.profiles().at("device"),
                               "device");
  ASSERT_TRUE(checked.ok()) << checked.status();
  absl::Time now = absl::FromUnixSeconds(1800000000);
  std::string serial = NewSerial();
  auto cert = (*builder)->Issue(*checked, "device", serial, now);
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
  auto builder = CertificateBuilder::Create(&ca->ca, ca->signer.get(), config);
  auto checked = csr::CheckCsr(testing::Csr("ec-p256", "/CN=LATE"), config.profiles().at("device"), "device");
  absl::Time late = ca->ca.not_after - absl::Hours(24);
  auto cert = (*builder)->Issue(*checked, "device", NewSerial(), late);
  ASSERT_TRUE(cert.ok());
  EXPECT_EQ(cert->not_after, ca->ca.not_after);
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

}  // namespace
}  // namespace linesign::issuance
