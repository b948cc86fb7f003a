#include "server/revocation/crl_builder.h"

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/software_ca.h"
#include "tests/testing/strict_parse.h"

namespace linesign::revocation {
namespace {

using ::testing::HasSubstr;

OsslPtr<X509_CRL> Parse(const std::string& der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  return OsslPtr<X509_CRL>(d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size())));
}

class CrlBuilderTest : public ::testing::TestWithParam<std::string> {};

// The CRL verifies with the CA key, names the CA's subject exactly, carries the number and the CA's key id, and
// lists each serial with its date and reason (none for unspecified); the strict parsers accept it.
TEST_P(CrlBuilderTest, BuildsAFullCrlSignedByTheCaKey) {
  auto ca = testing::SoftwareCa::Create(GetParam());
  ASSERT_NE(ca, nullptr);
  auto builder = CrlBuilder::Create(&ca->ca, ca->signer.get());
  ASSERT_TRUE(builder.ok()) << builder.status();
  CrlContent content{.number = 4242,
                     .this_update = absl::FromUnixSeconds(1800000000),
                     .next_update = absl::FromUnixSeconds(1800000000) + absl::Hours(168),
                     .entries = {{"0A1B", 1799990000, 1}, {"7F00000000000000000000000000000001", 1799990001, 0},
                                 {"05", 1799990002, 5}}};
  auto der = (*builder)->Build(content);
  ASSERT_TRUE(der.ok()) << der.status();
  auto crl = Parse(*der);
  ASSERT_NE(crl, nullptr);
  EXPECT_EQ(X509_CRL_verify(crl.get(), X509_get0_pubkey(ca->ca.certificate.get())), 1);
  EXPECT_EQ(X509_CRL_get_version(crl.get()), X509_CRL_VERSION_2);
  EXPECT_EQ(ToDer(i2d_X509_NAME, static_cast<const X509_NAME*>(X509_CRL_get_issuer(crl.get()))),
            ToDer(i2d_X509_NAME, static_cast<const X509_NAME*>(X509_get_subject_name(ca->ca.certificate.get()))));
  EXPECT_EQ(ASN1_TIME_cmp_time_t(X509_CRL_get0_lastUpdate(crl.get()), 1800000000), 0);
  EXPECT_EQ(ASN1_TIME_cmp_time_t(X509_CRL_get0_nextUpdate(crl.get()), 1800000000 + 168 * 3600), 0);

  auto* number = static_cast<ASN1_INTEGER*>(X509_CRL_get_ext_d2i(crl.get(), NID_crl_number, nullptr, nullptr));
  ASSERT_NE(number, nullptr);
  EXPECT_EQ(ASN1_INTEGER_get(number), 4242);
  ASN1_INTEGER_free(number);
  auto* akid =
      static_cast<AUTHORITY_KEYID*>(X509_CRL_get_ext_d2i(crl.get(), NID_authority_key_identifier, nullptr, nullptr));
  ASSERT_NE(akid, nullptr);
  ASSERT_NE(akid->keyid, nullptr);
  const ASN1_OCTET_STRING* ski = X509_get0_subject_key_id(ca->ca.certificate.get());
  ASSERT_NE(ski, nullptr);
  EXPECT_EQ(ASN1_OCTET_STRING_cmp(akid->keyid, ski), 0);
  AUTHORITY_KEYID_free(akid);

  STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl.get());
  ASSERT_EQ(sk_X509_REVOKED_num(revoked), 3);
  std::map<std::string, std::pair<time_t, long>> got;
  for (int i = 0; i < 3; ++i) {
    X509_REVOKED* r = sk_X509_REVOKED_value(revoked, i);
    OsslPtr<BIGNUM> bn(ASN1_INTEGER_to_BN(X509_REVOKED_get0_serialNumber(r), nullptr));
    char* hex = BN_bn2hex(bn.get());
    int crit = 0;
    auto* reason = static_cast<ASN1_ENUMERATED*>(X509_REVOKED_get_ext_d2i(r, NID_crl_reason, &crit, nullptr));
    long code = reason == nullptr ? -1 : ASN1_ENUMERATED_get(reason);
    ASN1_ENUMERATED_free(reason);
    struct tm tm = {};
    ASN1_TIME_to_tm(X509_REVOKED_get0_revocationDate(r), &tm);
    got[hex] = {timegm(&tm), code};
    OPENSSL_free(hex);
  }
  EXPECT_EQ(got["0A1B"], std::make_pair(time_t{1799990000}, 1L));
  EXPECT_EQ(got["7F00000000000000000000000000000001"], std::make_pair(time_t{1799990001}, -1L));  // unspecified
  EXPECT_EQ(got["05"], std::make_pair(time_t{1799990002}, 5L));

  EXPECT_TRUE(testing::StrictParseCrl(*der).ok()) << testing::StrictParseCrl(*der);
}

TEST_P(CrlBuilderTest, AnEmptyCrlIsValidToo) {
  auto ca = testing::SoftwareCa::Create(GetParam());
  auto builder = CrlBuilder::Create(&ca->ca, ca->signer.get());
  auto der = (*builder)->Build({.number = 1,
                                .this_update = absl::FromUnixSeconds(1800000000),
                                .next_update = absl::FromUnixSeconds(1800003600)});
  ASSERT_TRUE(der.ok()) << der.status();
  EXPECT_TRUE(testing::StrictParseCrl(*der).ok()) << testing::StrictParseCrl(*der);
}

INSTANTIATE_TEST_SUITE_P(CaKeys, CrlBuilderTest, ::testing::Values("ec-p256", "ec-p384", "rsa-2048"));

TEST(CrlBuilderRefusals, EachBadContentIsNamed) {
  auto ca = testing::SoftwareCa::Create("ec-p256");
  auto builder = CrlBuilder::Create(&ca->ca, ca->signer.get());
  const absl::Time t = absl::FromUnixSeconds(1800000000);
  struct Case {
    CrlContent content;
    std::string message;
  } cases[] = {
      {{.number = 0, .this_update = t, .next_update = t + absl::Hours(1)}, "CRL number 0 is not positive"},
      {{.number = 1, .this_update = t, .next_update = t}, "nextUpdate must be after thisUpdate"},
      {{.number = 1, .this_update = t, .next_update = t + absl::Hours(1), .entries = {{"XYZ", 1, 1}}},
       "serial 'XYZ' is not hexadecimal"},
      {{.number = 1, .this_update = t, .next_update = t + absl::Hours(1), .entries = {{"01", 1, 7}}},
       "reason 7 is not an RFC 5280 CRLReason"},
  };
  for (const Case& c : cases) {
    auto der = (*builder)->Build(c.content);
    ASSERT_FALSE(der.ok());
    EXPECT_EQ(der.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(der.status().message(), HasSubstr(c.message));
  }
}

}  // namespace
}  // namespace linesign::revocation
