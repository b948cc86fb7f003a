// Differential tests: the fast path against OpenSSL's X509 API, over many generated CSRs of every supported key
// type. (1) The strict CSR decoder accepts each of them itself and yields exactly what the OpenSSL reference
// checker yields. (2) For the same CSR, serial, times and profile, the DER-template certificate builder and a
// certificate built with OpenSSL's X509 API have byte-identical TBSCertificates, and the issued certificate's
// signature verifies. (3) Every malformed or refused CSR is refused by both, the fast path never accepting alone.
#include <openssl/x509v3.h>

#include "absl/strings/str_cat.h"
#include "common/openssl_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/config/config.h"
#include "server/csr/csr.h"
#include "server/issuance/certificate_builder.h"
#include "tests/testing/certs.h"
#include "tests/testing/software_ca.h"

namespace linesign::issuance {
namespace {

v1::ServerConfig Config() {
  v1::ServerConfig c;
  auto& p = (*c.mutable_profiles())["device"];
  p.set_validity_days(90);
  for (const char* k : {"ec-p256", "ec-p384", "ed25519", "rsa"}) p.add_key_types(k);
  for (const char* s : {"dns", "ip", "uri", "email"}) p.add_san_types(s);
  for (const char* a : {"CN", "O", "OU", "C", "L", "ST", "serialNumber"}) p.add_subject_attributes(a);
  p.add_key_usages("digitalSignature");
  p.add_key_usages("keyAgreement");
  p.add_extended_key_usages("clientAuth");
  p.add_extended_key_usages("serverAuth");
  p.set_crl_distribution_point("http://crl.example.com/linesign.crl");
  p.add_policy_oids("1.3.6.1.4.1.55555.1.1");
  p.add_policy_oids("2.23.140.1.2.1");
  config::ApplyDefaults(&c);
  return c;
}

struct Generated {
  std::string name;
  std::string der;
};

std::vector<Generated> Corpus() {
  std::vector<Generated> out;
  const std::vector<std::pair<std::string, std::vector<std::string>>> shapes = {
      {"/CN=AB12CD34EF56", {}},
      {"/CN=AB12CD34EF56/O=Acme Devices/OU=Line 4/C=DE", {"DNS:unit.devices.example"}},
      {"/C=US/ST=Ohio/L=Dayton/O=Acme, Inc./CN=device+7", {"DNS:a.example", "IP:10.1.2.3", "IP:2001:db8::7"}},
      {"/CN=Gerät Süd/serialNumber=0042", {"URI:urn:dev:7", "email:ops@acme.example"}},
      {"/CN= leading space and trailing #", {"DNS:x.example"}},
  };
  for (const char* alg : {"ec-p256", "ec-p384", "ed25519", "rsa-2048", "rsa-3072"}) {
    for (size_t i = 0; i < shapes.size(); ++i) {
      for (int n = 0; n < (std::string(alg).rfind("rsa", 0) == 0 ? 1 : 4); ++n) {
        out.push_back({absl::StrCat(alg, "/shape", i, "/", n), testing::Csr(alg, shapes[i].first, shapes[i].second)});
      }
    }
  }
  out.push_back({"rsa-4096", testing::Csr("rsa-4096", "/CN=BIGRSA", {"DNS:big.example"})});
  return out;
}

TEST(DifferentialTest, FastDecoderAcceptsEveryGeneratedCsrAndMatchesTheReference) {
  v1::ServerConfig config = Config();
  const v1::Profile& profile = config.profiles().at("device");
  int n = 0;
  for (const auto& g : Corpus()) {
    SCOPED_TRACE(g.name);
    auto fast = csr::CheckCsrFastOnly(g.der, profile);
    auto reference = csr::CheckCsrReference(g.der, profile, "device");
    ASSERT_TRUE(reference.ok()) << reference.status();
    ASSERT_TRUE(fast.has_value()) << "the fast path deferred a CSR it should take";
    EXPECT_EQ(fast->der, reference->der);
    EXPECT_EQ(Hex(fast->subject_der), Hex(reference->subject_der));
    EXPECT_EQ(fast->subject_text, reference->subject_text);
    EXPECT_EQ(fast->subject_attributes, reference->subject_attributes);
    EXPECT_EQ(Hex(fast->spki_der), Hex(reference->spki_der));
    EXPECT_EQ(Hex(fast->san_der), Hex(reference->san_der));
    EXPECT_EQ(fast->sans, reference->sans);
    EXPECT_EQ(fast->key.type, reference->key.type);
    EXPECT_EQ(fast->key.bits, reference->key.bits);
    ++n;
  }
  EXPECT_GE(n, 70);
}

// ReferenceTbs builds the same certificate with OpenSSL's X509 API and returns its TBSCertificate.
std::string ReferenceTbs(const testing::SoftwareCa& ca, const v1::Profile& p, const std::string& csr_der,
                         const std::string& serial, absl::Time not_before, absl::Time not_after, int sig_nid) {
  const auto* q = reinterpret_cast<const unsigned char*>(csr_der.data());
  OsslPtr<X509_REQ> req(d2i_X509_REQ(nullptr, &q, static_cast<long>(csr_der.size())));
  OsslPtr<X509> x(X509_new());
  X509_set_version(x.get(), X509_VERSION_3);
  OsslPtr<BIGNUM> bn(BN_bin2bn(reinterpret_cast<const unsigned char*>(serial.data()), serial.size(), nullptr));
  BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(x.get()));
  X509_ALGOR* alg = const_cast<X509_ALGOR*>(X509_get0_tbs_sigalg(x.get()));
  X509_ALGOR_set0(alg, OBJ_nid2obj(sig_nid), sig_nid == NID_sha256WithRSAEncryption ? V_ASN1_NULL : V_ASN1_UNDEF,
                  nullptr);
  X509_set_issuer_name(x.get(), X509_get_subject_name(ca.ca.certificate.get()));
  ASN1_TIME_set(X509_getm_notBefore(x.get()), absl::ToTimeT(not_before));
  ASN1_TIME_set(X509_getm_notAfter(x.get()), absl::ToTimeT(not_after));
  X509_set_subject_name(x.get(), X509_REQ_get_subject_name(req.get()));
  X509_set_pubkey(x.get(), X509_REQ_get0_pubkey(req.get()));
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, ca.ca.certificate.get(), x.get(), nullptr, nullptr, 0);
  std::string ku = "critical", eku;
  for (const auto& u : p.key_usages()) absl::StrAppend(&ku, ",", u);
  for (const auto& u : p.extended_key_usages()) absl::StrAppend(&eku, eku.empty() ? "" : ",", u);
  for (auto [nid, value] : std::vector<std::pair<int, std::string>>{
           {NID_basic_constraints, "critical,CA:FALSE"},
           {NID_key_usage, ku},
           {NID_ext_key_usage, eku},
           {NID_crl_distribution_points, "URI:" + p.crl_distribution_point()}}) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
    EXPECT_NE(ext, nullptr) << OBJ_nid2sn(nid) << " " << OpenSslErrors();
    X509_add_ext(x.get(), ext, -1);
    X509_EXTENSION_free(ext);
  }
  CERTIFICATEPOLICIES* policies = sk_POLICYINFO_new_null();
  for (const auto& oid : p.policy_oids()) {
    POLICYINFO* info = POLICYINFO_new();
    ASN1_OBJECT_free(info->policyid);
    info->policyid = OBJ_txt2obj(oid.c_str(), 1);
    sk_POLICYINFO_push(policies, info);
  }
  X509_EXTENSION* policies_ext = X509V3_EXT_i2d(NID_certificate_policies, 0, policies);
  X509_add_ext(x.get(), policies_ext, -1);
  X509_EXTENSION_free(policies_ext);
  CERTIFICATEPOLICIES_free(policies);
  for (auto [nid, value] : std::vector<std::pair<int, std::string>>{
           {NID_subject_key_identifier, "hash"},
           {NID_authority_key_identifier, "keyid:always"}}) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
    EXPECT_NE(ext, nullptr) << OBJ_nid2sn(nid) << " " << OpenSslErrors();
    X509_add_ext(x.get(), ext, -1);
    X509_EXTENSION_free(ext);
  }
  STACK_OF(X509_EXTENSION)* exts = X509_REQ_get_extensions(req.get());
  for (int i = 0; exts != nullptr && i < sk_X509_EXTENSION_num(exts); ++i) {
    X509_EXTENSION* e = sk_X509_EXTENSION_value(exts, i);
    if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) == NID_subject_alt_name) X509_add_ext(x.get(), e, -1);
  }
  sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  unsigned char* buf = nullptr;
  int len = i2d_re_X509_tbs(x.get(), &buf);
  std::string out(reinterpret_cast<char*>(buf), len > 0 ? len : 0);
  OPENSSL_free(buf);
  return out;
}

class TbsDifferentialTest : public ::testing::TestWithParam<std::string> {};

TEST_P(TbsDifferentialTest, TemplateBuilderMatchesOpenSslByteForByte) {
  auto ca = testing::SoftwareCa::Create(GetParam());
  ASSERT_NE(ca, nullptr);
  v1::ServerConfig config = Config();
  const v1::Profile& profile = config.profiles().at("device");
  auto builder = CertificateBuilder::Create(&ca->ca, ca->signer.get());
  ASSERT_TRUE(builder.ok()) << builder.status();
  std::shared_ptr<const profile::Profile> compiled = *profile::Profile::Compile("device", profile);
  const int sig_nid = GetParam() == "ec-p256"   ? NID_ecdsa_with_SHA256
                      : GetParam() == "ec-p384" ? NID_ecdsa_with_SHA384
                                                : NID_sha256WithRSAEncryption;
  int compared = 0;
  for (const auto& g : Corpus()) {
    SCOPED_TRACE(g.name);
    auto checked = csr::CheckCsr(g.der, *compiled);
    ASSERT_TRUE(checked.ok()) << checked.status();
    // The builder encodes the typed SANs again: the same bytes as the CSR's extension.
    EXPECT_EQ(Hex(checked->sans.empty() ? "" : csr::GeneralNamesDer(checked->sans)), Hex(checked->san_der));
    IssuanceRequest request = csr::MakeIssuanceRequest(*std::move(checked), compiled, "station", "r");
    std::string serial = NewSerial();
    absl::Time now = absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now()));
    absl::Time nb, na;
    auto tbs = (*builder)->TbsDer(request, serial, now, &nb, &na);
    ASSERT_TRUE(tbs.ok()) << tbs.status();
    EXPECT_EQ(Hex(*tbs), Hex(ReferenceTbs(*ca, profile, g.der, serial, nb, na, sig_nid)));
    auto issued = (*builder)->Issue(request, serial, now);
    ASSERT_TRUE(issued.ok());
    auto cert = testing::ParseDer(issued->der);
    ASSERT_NE(cert, nullptr);
    EXPECT_EQ(X509_verify(cert.get(), X509_get0_pubkey(ca->ca.certificate.get())), 1);
    ++compared;
  }
  EXPECT_GE(compared, 70);
}

INSTANTIATE_TEST_SUITE_P(CaKeys, TbsDifferentialTest, ::testing::Values("ec-p256", "ec-p384", "rsa-2048"));

TEST(DifferentialTest, RefusedCsrsAreRefusedByBothAndNeverAcceptedByTheFastPathAlone) {
  v1::ServerConfig config = Config();
  v1::Profile profile = config.profiles().at("device");
  profile.clear_san_types();
  profile.add_san_types("dns");
  std::string good = testing::Csr("ec-p256", "/CN=GOOD");
  std::string bad_sig = good;
  bad_sig[bad_sig.size() - 3] ^= 1;
  std::string indefinite = std::string("\x30\x80", 2) + good.substr(2) + std::string(2, '\0');
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"truncated", good.substr(0, good.size() - 5)},
      {"trailing", good + "x"},
      {"bad signature", bad_sig},
      {"indefinite length", indefinite},
      {"rsa-1024", testing::CsrWithKeySpec("RSA", "1024", "/CN=WEAK")},
      {"secp256k1", testing::CsrWithKeySpec("EC", "secp256k1", "/CN=K1")},
      {"san type", testing::Csr("ec-p256", "/CN=SAN", {"URI:urn:x"})},
      {"attribute", testing::Csr("ec-p256", "/CN=X/title=boss")},
      {"no CN", testing::Csr("ec-p256", "/O=Acme")},
      {"garbage", std::string(200, 'A')},
  };
  for (const auto& [name, der] : bad) {
    SCOPED_TRACE(name);
    EXPECT_FALSE(csr::CheckCsrFastOnly(der, profile).has_value());
    auto fast = csr::CheckCsr(der, profile, "device");
    auto reference = csr::CheckCsrReference(der, profile, "device");
    EXPECT_FALSE(fast.ok());
    if (name != "indefinite length") {
      EXPECT_FALSE(reference.ok());
      EXPECT_EQ(fast.status(), reference.status());  // the same message
    }
  }
}

}  // namespace
}  // namespace linesign::issuance
