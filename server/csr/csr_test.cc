#include "server/csr/csr.h"

#include "common/openssl_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/config/config.h"
#include "tests/testing/certs.h"

namespace linesign::csr {
namespace {

using ::testing::HasSubstr;

v1::Profile DeviceProfile() {
  v1::ServerConfig c;
  auto& p = (*c.mutable_profiles())["device"];
  p.add_san_types("dns");
  config::ApplyDefaults(&c);
  return c.profiles().at("device");
}

TEST(DecodeCsrTest, AcceptsDerAndPemAndRefusesOtherLabels) {
  std::string der = testing::Csr("ec-p256", "/CN=X");
  EXPECT_EQ(*DecodeCsr(der), der);
  EXPECT_EQ(*DecodeCsr(PemEncode("CERTIFICATE REQUEST", der)), der);
  EXPECT_EQ(*DecodeCsr(PemEncode("NEW CERTIFICATE REQUEST", der)), der);
  EXPECT_THAT(std::string(DecodeCsr(PemEncode("X509 CRL", der)).status().message()), HasSubstr("PEM label"));
  EXPECT_THAT(std::string(DecodeCsr("-----BEGIN CERTIFICATE REQUEST-----\n!!!\n").status().message()),
              HasSubstr("PEM is malformed"));
  EXPECT_THAT(std::string(DecodeCsr("").status().message()), HasSubstr("no CSR"));
  EXPECT_THAT(std::string(DecodeCsr(std::string(kMaxCsrBytes + 1, 'a')).status().message()), HasSubstr("exceeds"));
}

TEST(DecodeCsrTest, PemMustBeExactlyOneCsrBlockWithNothingAfterIt) {
  std::string der = testing::Csr("ec-p256", "/CN=X");
  std::string pem = PemEncode("CERTIFICATE REQUEST", der);
  EXPECT_EQ(*DecodeCsr(pem + "\n  \r\n\t"), der);  // whitespace after the END line is fine
  EXPECT_THAT(std::string(DecodeCsr(pem + "garbage").status().message()),
              HasSubstr("CSR PEM has 7 bytes of trailing data after its END line"));
  EXPECT_THAT(std::string(DecodeCsr(pem + pem).status().message()),
              HasSubstr("CSR PEM holds more than one PEM block"));
  EXPECT_THAT(std::string(DecodeCsr(pem + PemEncode("CERTIFICATE", der)).status().message()),
              HasSubstr("more than one PEM block"));
  std::string with_headers = pem;
  with_headers.insert(with_headers.find('\n') + 1, "Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\n");
  EXPECT_THAT(std::string(DecodeCsr(with_headers).status().message()), HasSubstr("CSR PEM carries headers"));
}

TEST(CheckCsrTest, CopiesSubjectKeyAndSans) {
  auto c = CheckCsr(testing::Csr("ec-p384", "/CN=DEV1/O=Acme", {"DNS:dev1.example"}), DeviceProfile(), "device");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->subject_text, "O=Acme,CN=DEV1");
  EXPECT_EQ(c->key.type, "ec-p384");
  EXPECT_THAT(c->sans, ::testing::ElementsAre(San{SanType::kDns, "dev1.example"}));
  EXPECT_FALSE(c->san_der.empty());
}

TEST(CheckCsrTest, KeyRulesFollowTheProfile) {
  v1::Profile p = DeviceProfile();  // default key types: P-256 and P-384 only
  EXPECT_THAT(std::string(CheckCsr(testing::Csr("ed25519", "/CN=E"), p, "device").status().message()),
              HasSubstr("ed25519 keys are not allowed by profile 'device'"));
  EXPECT_THAT(std::string(CheckCsr(testing::Csr("rsa-2048", "/CN=R"), p, "device").status().message()),
              HasSubstr("RSA keys are not allowed"));
  p.add_key_types("rsa");
  p.set_rsa_min_bits(3072);
  EXPECT_THAT(std::string(CheckCsr(testing::Csr("rsa-2048", "/CN=R"), p, "device").status().message()),
              HasSubstr("RSA key of 2048 bits is outside the 3072..4096 bits"));
  EXPECT_TRUE(CheckCsr(testing::Csr("rsa-3072", "/CN=R"), p, "device").ok());
}

}  // namespace
}  // namespace linesign::csr
