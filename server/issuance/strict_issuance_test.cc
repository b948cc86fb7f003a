// What linesign signs is valid for strict parsers. Hand-made CSRs carry exactly the octets an adversarial
// station would send (any string tag, any SAN bytes, any key encoding, any attribute); each is either refused by
// both CSR paths with the same precise message, or issued through the real certificate builder and accepted by
// OpenSSL, python3-cryptography and GnuTLS (testing::StrictParse). The builder refuses the same things on its
// own when handed a CheckedCsr that did not come through the front.
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/der.h"
#include "common/openssl_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/config/config.h"
#include "server/csr/csr.h"
#include "server/csr/strict_rules.h"
#include "server/issuance/certificate_builder.h"
#include "server/profile/profile.h"
#include "tests/testing/software_ca.h"
#include "tests/testing/strict_parse.h"

namespace linesign::issuance {
namespace {

using ::testing::HasSubstr;

constexpr uint8_t kUtf8 = 0x0c, kPrintable = 0x13, kT61 = 0x14, kIa5 = 0x16, kBmp = 0x1e;

v1::ServerConfig Config(bool wildcard = false) {
  v1::ServerConfig c;
  auto& p = (*c.mutable_profiles())["device"];
  for (const char* k : {"ec-p256", "ec-p384", "ed25519", "rsa"}) p.add_key_types(k);
  for (const char* s : {"dns", "ip", "uri", "email"}) p.add_san_types(s);
  for (const char* a : {"CN", "O", "OU", "C", "L", "ST", "serialNumber", "dnQualifier", "emailAddress"}) {
    p.add_subject_attributes(a);
  }
  p.set_allow_wildcard_dns(wildcard);
  config::ApplyDefaults(&c);
  return c;
}

struct Atv {
  std::string oid;
  uint8_t tag;
  std::string value;
};

std::string Name(const std::vector<Atv>& atvs) {
  std::string rdns;
  for (const auto& a : atvs) {
    rdns += der::Tlv(der::kSet, der::Sequence({der::Oid(a.oid), der::Tlv(a.tag, a.value)}));
  }
  return der::Tlv(der::kSequence, rdns);
}

std::string Extension(const std::string& oid, const std::string& value, bool critical = false) {
  if (critical) return der::Sequence({der::Oid(oid), der::Boolean(true), der::OctetString(value)});
  return der::Sequence({der::Oid(oid), der::OctetString(value)});
}

// ExtensionRequest is one extensionRequest Attribute carrying `extensions` (already encoded).
std::string ExtensionRequest(const std::vector<std::string>& extensions) {
  std::string all;
  for (const auto& e : extensions) all += e;
  return der::Sequence({der::Oid("1.2.840.113549.1.9.14"), der::Tlv(der::kSet, der::Tlv(der::kSequence, all))});
}

std::string San(const std::vector<std::pair<uint8_t, std::string>>& names) {
  std::string all;
  for (const auto& [tag, v] : names) all += der::Tlv(tag, v);
  return Extension("2.5.29.17", der::Tlv(der::kSequence, all));
}

// Csr signs a CertificationRequestInfo made of exactly these parts with `key` (the proof of possession is
// real unless `spki` is not `key`'s).
std::string Csr(EVP_PKEY* key, const std::string& subject, const std::string& attributes,
                std::string spki = "") {
  if (spki.empty()) spki = PublicKeyDer(key);
  std::string info = der::Sequence({der::SmallInteger(0), subject, spki, der::Tlv(der::kContext0Constructed, attributes)});
  const bool ed = EVP_PKEY_get_base_id(key) == EVP_PKEY_ED25519;
  const bool rsa = EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA;
  OsslPtr<EVP_MD_CTX> ctx(EVP_MD_CTX_new());
  EVP_DigestSignInit(ctx.get(), nullptr, ed ? nullptr : EVP_sha256(), nullptr, key);
  size_t len = 0;
  EVP_DigestSign(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(info.data()), info.size());
  std::string sig(len, '\0');
  EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                 reinterpret_cast<const unsigned char*>(info.data()), info.size());
  sig.resize(len);
  std::string alg = ed    ? der::Sequence({der::Oid("1.3.101.112")})
                    : rsa ? der::Sequence({der::Oid("1.2.840.113549.1.1.11"), der::Tlv(der::kNull, "")})
                          : der::Sequence({der::Oid("1.2.840.10045.4.3.2")});
  return der::Sequence({info, alg, der::BitString(sig)});
}

OsslPtr<EVP_PKEY> P256() { return OsslPtr<EVP_PKEY>(EVP_EC_gen("P-256")); }

const std::string kCn = "2.5.4.3";

struct Case {
  std::string name;
  std::string csr;
  std::string message;  // "" when the CSR must be accepted
};

std::vector<Case> Cases() {
  auto k = P256();
  EVP_PKEY* key = k.get();
  auto cn = [](uint8_t tag, std::string v) { return Atv{kCn, tag, std::move(v)}; };
  auto name = [&](std::vector<Atv> extra) {
    extra.insert(extra.begin(), Atv{kCn, kUtf8, "DEVICE1"});
    return Name(extra);
  };
  auto with_san = [&](std::vector<std::pair<uint8_t, std::string>> sans) {
    return Csr(key, Name({cn(kUtf8, "SAN")}), ExtensionRequest({San(sans)}));
  };
  std::vector<Case> out = {
      // Accepted: the boundaries.
      {"printable", Csr(key, Name({cn(kPrintable, "A-Z a-z 0-9 '()+,-./:=?")}), ""), ""},
      {"utf8", Csr(key, Name({cn(kUtf8, "Gerät \xF0\x9F\x94\x91 Süd")}), ""), ""},
      {"country", Csr(key, name({{"2.5.4.6", kPrintable, "DE"}}), ""), ""},
      {"serialNumber", Csr(key, name({{"2.5.4.5", kPrintable, "0042-AB"}}), ""), ""},
      {"emailAddress", Csr(key, name({{"1.2.840.113549.1.9.1", kIa5, "ops@acme.example"}}), ""), ""},
      {"dns 63+253", with_san({{0x82, std::string(63, 'a') + "." + std::string(63, 'b') + "." +
                                           std::string(63, 'c') + "." + std::string(61, 'd')}}),
       ""},
      {"sans", with_san({{0x82, "Unit-1.Devices.example"}, {0x81, "a.b+c@x.example"},
                         {0x86, "urn:dev:7?x=%2F#frag"}, {0x87, std::string("\x0a\x01\x02\x03", 4)}}),
       ""},
      {"basicConstraints CA:FALSE",
       Csr(key, Name({cn(kUtf8, "BC")}), ExtensionRequest({Extension("2.5.29.19", der::Sequence({}), true)})), ""},
      {"empty extensionRequest", Csr(key, Name({cn(kUtf8, "E")}), ExtensionRequest({})), ""},
      // Refused: string types.
      {"printable @", Csr(key, Name({cn(kPrintable, "a@b")}), ""),
       "subject attribute CN (PrintableString) 'a@b' holds 0x40 at offset 1, which a PrintableString may not"},
      {"printable *", Csr(key, Name({cn(kPrintable, "a*b")}), ""), "holds 0x2A at offset 1"},
      {"printable newline", Csr(key, Name({cn(kPrintable, "a\nb")}), ""),
       "'a\\x0Ab' holds the control character 0x0A at offset 1"},
      {"utf8 control", Csr(key, Name({cn(kUtf8, "a\x7f")}), ""), "holds the control character 0x7F"},
      {"utf8 nul", Csr(key, Name({cn(kUtf8, std::string("DEV\0evil", 8))}), ""), "control character 0x00"},
      {"utf8 overlong", Csr(key, Name({cn(kUtf8, "\xc0\xaf")}), ""), "is not well-formed UTF-8"},
      {"utf8 surrogate", Csr(key, Name({cn(kUtf8, "\xed\xa0\x80")}), ""), "is not well-formed UTF-8"},
      {"utf8 0xff", Csr(key, Name({cn(kUtf8, "a\xff")}), ""), "is not well-formed UTF-8"},
      {"teletex", Csr(key, Name({cn(kT61, "abc")}), ""), "(TeletexString) 'abc' must be a UTF8String or a "},
      {"bmp", Csr(key, Name({cn(kBmp, std::string("\0a", 2))}), ""), "(BMPString)"},
      {"ia5 cn", Csr(key, Name({cn(kIa5, "abc")}), ""), "(IA5String) 'abc' must be a UTF8String or a Printable"},
      {"email 0xff", Csr(key, name({{"1.2.840.113549.1.9.1", kIa5, "a\xff@x.example"}}), ""),
       "an IA5String is 7-bit"},
      {"email utf8", Csr(key, name({{"1.2.840.113549.1.9.1", kUtf8, "a@x.example"}}), ""),
       "subject attribute emailAddress (UTF8String) 'a@x.example' must be an IA5String"},
      {"country 3 letters", Csr(key, name({{"2.5.4.6", kUtf8, "DEU"}}), ""),
       "subject attribute C (UTF8String) 'DEU' is not a country code"},
      {"country lower", Csr(key, name({{"2.5.4.6", kPrintable, "de"}}), ""), "is not a country code"},
      {"serialNumber utf8", Csr(key, name({{"2.5.4.5", kUtf8, "42"}}), ""),
       "subject attribute serialNumber (UTF8String) '42' must be a PrintableString"},
      {"dnQualifier utf8", Csr(key, name({{"2.5.4.46", kUtf8, "q"}}), ""), "must be a PrintableString"},
      // Refused: SANs.
      {"dns newline", with_san({{0x82, "a\n.example"}}),
       "subjectAltName dns 'a\\x0A.example' is not a valid DNS name: it contains the character 0x0A"},
      {"dns 0xff", with_san({{0x82, "a\xff.example"}}), "contains the character 0xFF"},
      {"dns wildcard", with_san({{0x82, "*.example"}}), "a wildcard ('*.') is not allowed"},
      {"dns inner star", with_san({{0x82, "a*.example"}}), "contains the character 0x2A"},
      {"dns trailing dot", with_san({{0x82, "a.example."}}), "it ends with a dot"},
      {"dns empty label", with_san({{0x82, "a..example"}}), "it has an empty label"},
      {"dns long label", with_san({{0x82, std::string(64, 'a') + ".example"}}), "is longer than 63"},
      {"dns too long", with_san({{0x82, std::string(63, 'a') + "." + std::string(63, 'b') + "." +
                                            std::string(63, 'c') + "." + std::string(62, 'd')}}),
       "it is 254 characters long, more than 253"},
      {"dns hyphen", with_san({{0x82, "-a.example"}}), "starts or ends with '-'"},
      {"dns underscore", with_san({{0x82, "a_b.example"}}), "contains the character 0x5F"},
      {"email no at", with_san({{0x81, "ops.example"}}), "is not a valid email address (rfc822Name)"},
      {"email space", with_san({{0x81, "o ps@x.example"}}), "the local part contains the character 0x20"},
      {"email bad domain", with_san({{0x81, "ops@x..example"}}), "the domain is invalid"},
      {"uri relative", with_san({{0x86, "/just/a/path"}}), "is not an absolute URI"},
      {"uri space", with_san({{0x86, "http://x.example/a b"}}), "contains the character 0x20"},
      {"uri bad escape", with_san({{0x86, "http://x.example/%zz"}}), "'%' not followed by two hex digits"},
      {"ip 5 octets", with_san({{0x87, "12345"}}), "IP address must be 4 or 16 bytes"},
      // Refused: attributes and extensions (item 10).
      {"keyUsage requested",
       Csr(key, Name({cn(kUtf8, "KU")}), ExtensionRequest({Extension("2.5.29.15", der::Tlv(der::kBitString, "\x07\x80"), true)})),
       "CSR requests the extension X509v3 Key Usage (2.5.29.15), which profile 'device' does not take"},
      {"unknown critical",
       Csr(key, Name({cn(kUtf8, "UC")}), ExtensionRequest({Extension("1.3.6.1.4.1.55555.9", der::Sequence({}), true)})),
       "CSR requests the extension 1.3.6.1.4.1.55555.9"},
      {"SAN twice",
       Csr(key, Name({cn(kUtf8, "S2")}), ExtensionRequest({San({{0x82, "a.example"}}), San({{0x82, "b.example"}})})),
       "CSR extensionRequest carries the extension X509v3 Subject Alternative Name (2.5.29.17) twice"},
      {"two extensionRequests",
       Csr(key, Name({cn(kUtf8, "E2")}), ExtensionRequest({San({{0x82, "a.example"}})}) + ExtensionRequest({})),
       "CSR carries two extensionRequest attributes"},
      {"extensionRequest not a SEQUENCE",
       Csr(key, Name({cn(kUtf8, "EB")}),
           der::Sequence({der::Oid("1.2.840.113549.1.9.14"), der::Tlv(der::kSet, der::OctetString("x"))})),
       "CSR extensionRequest attribute is malformed"},
      {"extension critical FALSE",
       Csr(key, Name({cn(kUtf8, "CF")}),
           ExtensionRequest({der::Sequence({der::Oid("2.5.29.17"), der::Boolean(false),
                                            der::OctetString(der::Tlv(der::kSequence, der::Tlv(0x82, "a.ex")))})})),
       "is malformed (critical must be DER TRUE)"},
      {"challengePassword",
       Csr(key, Name({cn(kUtf8, "CP")}),
           der::Sequence({der::Oid("1.2.840.113549.1.9.7"), der::Tlv(der::kSet, der::Tlv(kUtf8, "secret"))})),
       "CSR attribute challengePassword (1.2.840.113549.1.9.7) is not supported"},
      {"pathLen",
       Csr(key, Name({cn(kUtf8, "PL")}),
           ExtensionRequest({Extension("2.5.29.19", der::Sequence({der::SmallInteger(0)}), true)})),
       "carries a pathLenConstraint"},
      {"CA:TRUE",
       Csr(key, Name({cn(kUtf8, "CA")}),
           ExtensionRequest({Extension("2.5.29.19", der::Sequence({der::Boolean(true)}), true)})),
       "CSR asks for a CA certificate"},
  };
  return out;
}

class StrictIssuanceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ca_ = testing::SoftwareCa::Create("ec-p256");
    ASSERT_NE(ca_, nullptr);
    auto b = CertificateBuilder::Create(&ca_->ca, ca_->signer.get());
    ASSERT_TRUE(b.ok()) << b.status();
    builder_ = std::move(*b);
  }
  // Check runs `der` through both CSR paths and, when accepted, through the profile rules and the builder,
  // returning the refusal or the issued certificate.
  absl::StatusOr<std::string> Issue(const std::string& der, const v1::ServerConfig& config) {
    const v1::Profile& profile = config.profiles().at("device");
    auto checked = csr::CheckCsr(der, profile, "device");
    auto reference = csr::CheckCsrReference(der, profile, "device");
    auto fast = csr::CheckCsrFastOnly(der, profile);
    EXPECT_EQ(checked.status(), reference.status()) << "the two paths disagree";
    if (!checked.ok()) {
      EXPECT_FALSE(fast.has_value()) << "the fast path accepted what is refused";
      return checked.status();
    }
    EXPECT_TRUE(fast.has_value()) << "the fast path deferred a CSR it should take";
    if (fast.has_value()) {
      EXPECT_EQ(fast->subject_der, reference->subject_der);
      EXPECT_EQ(fast->subject_attributes, reference->subject_attributes);
      EXPECT_EQ(fast->san_der, reference->san_der);
      EXPECT_EQ(fast->sans, reference->sans);
      EXPECT_EQ(fast->spki_der, reference->spki_der);
    }
    std::shared_ptr<const profile::Profile> compiled = *profile::Profile::Compile("device", profile);
    if (auto st = compiled->CheckValues(checked->subject_attributes, checked->sans); !st.ok()) return st;
    if (auto st = compiled->MakeSans(checked->subject_attributes, &checked->sans); !st.ok()) return st;
    auto issued = builder_->Issue(csr::MakeIssuanceRequest(*std::move(checked), compiled, "station", "r"),
                                  NewSerial(), absl::Now());
    if (!issued.ok()) return issued.status();
    return issued->der;
  }

  v1::ServerConfig config_ = Config();
  std::unique_ptr<testing::SoftwareCa> ca_;
  std::unique_ptr<CertificateBuilder> builder_;
};

TEST_F(StrictIssuanceTest, AdversarialCsrsAreRefusedByBothPathsAndTheRestIssueStrictlyValidCertificates) {
  std::vector<std::string> issued;
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.name);
    ASSERT_FALSE(c.csr.empty());
    auto cert = Issue(c.csr, config_);
    if (c.message.empty()) {
      ASSERT_TRUE(cert.ok()) << cert.status();
      EXPECT_TRUE(testing::StrictParse(*cert).ok()) << testing::StrictParse(*cert);
      issued.push_back(*cert);
    } else {
      EXPECT_EQ(cert.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(std::string(cert.status().message()), HasSubstr(c.message));
    }
  }
  EXPECT_EQ(issued.size(), 9u);
}

TEST_F(StrictIssuanceTest, WildcardDnsOnlyWhenTheProfileAllowsIt) {
  auto key = P256();
  std::string csr = Csr(key.get(), Name({{kCn, kUtf8, "W"}}), ExtensionRequest({San({{0x82, "*.devices.example"}})}));
  EXPECT_THAT(std::string(Issue(csr, config_).status().message()), HasSubstr("a wildcard ('*.') is not allowed"));
  auto cert = Issue(csr, Config(/*wildcard=*/true));
  ASSERT_TRUE(cert.ok()) << cert.status();
  EXPECT_TRUE(testing::StrictParse(*cert, true).ok()) << testing::StrictParse(*cert, true);
  std::string bad = Csr(key.get(), Name({{kCn, kUtf8, "W"}}), ExtensionRequest({San({{0x82, "*.*.example"}})}));
  EXPECT_THAT(std::string(Issue(bad, Config(true)).status().message()), HasSubstr("contains the character 0x2A"));
}

// ---- Keys ----

std::string EcSpki(EVP_PKEY* key, const char* format) {
  OsslPtr<EVP_PKEY> copy(EVP_PKEY_dup(key));
  EVP_PKEY_set_utf8_string_param(copy.get(), OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, format);
  return PublicKeyDer(copy.get());
}

TEST_F(StrictIssuanceTest, CompressedAndHybridEcPointsAndExplicitCurvesAreRefused) {
  for (const char* curve : {"P-256", "P-384"}) {
    SCOPED_TRACE(curve);
    OsslPtr<EVP_PKEY> key(EVP_EC_gen(curve));
    std::string compressed = EcSpki(key.get(), "compressed");
    std::string hybrid = EcSpki(key.get(), "hybrid");
    ASSERT_NE(compressed, PublicKeyDer(key.get()));
    EXPECT_THAT(std::string(Issue(Csr(key.get(), Name({{kCn, kUtf8, "C"}}), "", compressed), config_)
                                .status()
                                .message()),
                HasSubstr("EC public key is a compressed point; linesign requires the uncompressed form"));
    EXPECT_THAT(std::string(Issue(Csr(key.get(), Name({{kCn, kUtf8, "H"}}), "", hybrid), config_).status().message()),
                HasSubstr("EC public key is a hybrid point, which RFC 5480 forbids"));
    // Explicit curve parameters instead of the curve's name (RFC 5480 forbids them; strict parsers refuse them).
    OsslPtr<EVP_PKEY> explicit_params(EVP_PKEY_dup(key.get()));
    ASSERT_EQ(EVP_PKEY_set_utf8_string_param(explicit_params.get(), OSSL_PKEY_PARAM_EC_ENCODING,
                                             OSSL_PKEY_EC_ENCODING_EXPLICIT),
              1);
    std::string explicit_spki = PublicKeyDer(explicit_params.get());
    ASSERT_NE(explicit_spki, PublicKeyDer(key.get()));
    EXPECT_THAT(
        std::string(Issue(Csr(key.get(), Name({{kCn, kUtf8, "E"}}), "", explicit_spki), config_).status().message()),
        HasSubstr("EC public key has explicit curve parameters; RFC 5480 allows only a named curve"));
    // The uncompressed form of the same key is issued.
    EXPECT_TRUE(Issue(Csr(key.get(), Name({{kCn, kUtf8, "U"}}), ""), config_).ok());
  }
}

TEST_F(StrictIssuanceTest, EcPointsOffTheCurveAndAtInfinityStayRefused) {
  for (const char* curve : {"P-256", "P-384"}) {
    SCOPED_TRACE(curve);
    OsslPtr<EVP_PKEY> key(EVP_EC_gen(curve));
    std::string spki = PublicKeyDer(key.get());
    spki[spki.size() - 1] ^= 1;  // the last octet of y
    EXPECT_THAT(std::string(Issue(Csr(key.get(), Name({{kCn, kUtf8, "O"}}), "", spki), config_).status().message()),
                HasSubstr("CSR public key cannot be decoded"));
  }
}

std::string Unhex(absl::string_view h) { return absl::HexStringToBytes(h); }

std::string Ed25519Spki(const std::string& key) {
  return der::Sequence({der::Sequence({der::Oid("1.3.101.112")}), der::BitString(key)});
}

// Ed25519Csr: a CSR whose key is `key` and whose signature is `signature`, as an attacker writes it.
std::string Ed25519Csr(const std::string& key, const std::string& signature) {
  std::string info = der::Sequence({der::SmallInteger(0), Name({{kCn, kUtf8, "FORGED"}}), Ed25519Spki(key),
                                    der::Tlv(der::kContext0Constructed, "")});
  return der::Sequence({info, der::Sequence({der::Oid("1.3.101.112")}), der::BitString(signature)});
}

TEST_F(StrictIssuanceTest, IdentityEd25519KeyForgesAProofOfPossessionAndIsRefused) {
  const std::string identity = Unhex("0100000000000000000000000000000000000000000000000000000000000000");
  const std::string signature = identity + std::string(32, '\0');
  std::string csr = Ed25519Csr(identity, signature);
  // The forgery is real: OpenSSL verifies this signature for this key over the request (and any message).
  OsslPtr<EVP_PKEY> pkey(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr,
                                                     reinterpret_cast<const unsigned char*>(identity.data()), 32));
  ASSERT_NE(pkey, nullptr);
  OsslPtr<EVP_MD_CTX> ctx(EVP_MD_CTX_new());
  ASSERT_EQ(EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, pkey.get()), 1);
  const std::string message = "any message at all";
  EXPECT_EQ(EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), 64,
                             reinterpret_cast<const unsigned char*>(message.data()), message.size()),
            1);
  OpenSslErrors();
  auto st = Issue(csr, config_).status();
  EXPECT_THAT(std::string(st.message()), HasSubstr("Ed25519 public key is a point of small order"));
}

TEST(StrictRulesTest, EverySmallOrderAndNonCanonicalEd25519KeyIsRefused) {
  const std::vector<std::string> small_order = {
      "0100000000000000000000000000000000000000000000000000000000000000",  // order 1
      "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  // order 2
      "0000000000000000000000000000000000000000000000000000000000000000",  // order 4
      "0000000000000000000000000000000000000000000000000000000000000080",  // order 4
      "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  // order 8
      "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",  // order 8
      "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  // order 8
      "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",  // order 8
      // Non-canonical encodings of the same points: x = 0 with the sign bit set.
      "0100000000000000000000000000000000000000000000000000000000000080",
      "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
  };
  for (const auto& h : small_order) {
    SCOPED_TRACE(h);
    EXPECT_THAT(std::string(csr::CheckPublicKey(Ed25519Spki(Unhex(h))).message()),
                HasSubstr("Ed25519 public key is a point of small order"));
    // And through the front, with the forged signature R = key, S = 0.
    v1::Profile profile = Config().profiles().at("device");
    auto st = csr::CheckCsr(Ed25519Csr(Unhex(h), Unhex(h) + std::string(32, '\0')), profile, "device").status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_FALSE(csr::CheckCsrFastOnly(Ed25519Csr(Unhex(h), Unhex(h) + std::string(32, '\0')), profile).has_value());
  }
  // y >= p = 2^255 - 19: p (= 0, order 4), p + 1 (= 1, order 1), 2^255 - 1, each with either sign.
  for (const auto& h : {"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
                        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
                        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
                        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
                        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"}) {
    SCOPED_TRACE(h);
    EXPECT_THAT(std::string(csr::CheckPublicKey(Ed25519Spki(Unhex(h))).message()),
                HasSubstr("Ed25519 public key is not canonically encoded (y >= 2^255-19)"));
  }
  // A real key passes.
  OsslPtr<EVP_PKEY> real(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  EXPECT_TRUE(csr::CheckPublicKey(PublicKeyDer(real.get())).ok());
}

std::string RsaSpki(const std::string& n, const std::string& e) {
  std::string key = der::Sequence({der::UnsignedInteger(n), der::UnsignedInteger(e)});
  return der::Sequence({der::Sequence({der::Oid("1.2.840.113549.1.1.1"), der::Tlv(der::kNull, "")}),
                        der::BitString(key)});
}

TEST_F(StrictIssuanceTest, RsaExponentIsBoundedBeforeTheSignatureIsChecked) {
  std::string n(256, '\xc5');  // 2048 bits, odd
  std::string e257 = std::string("\x01", 1) + std::string(31, '\0') + std::string("\x01", 1);  // 2^256 + 1
  std::string e256 = std::string("\x80", 1) + std::string(30, '\0') + std::string("\x01", 1);  // 2^255 + 1
  std::string e2048 = std::string("\x80", 1) + std::string(254, '\0') + std::string("\x01", 1);
  EXPECT_TRUE(csr::CheckPublicKey(RsaSpki(n, e256)).ok());
  EXPECT_THAT(std::string(csr::CheckPublicKey(RsaSpki(n, e257)).message()),
              HasSubstr("RSA public exponent of 257 bits is too large (at most 2^256)"));
  // Through the front: the CSR's signature (by an unrelated key) is never looked at.
  auto signer = P256();
  std::string csr = Csr(signer.get(), Name({{kCn, kUtf8, "BIGE"}}), "", RsaSpki(n, e2048));
  EXPECT_THAT(std::string(Issue(csr, config_).status().message()),
              HasSubstr("RSA public exponent of 2048 bits is too large (at most 2^256)"));
}

// ---- The builder on its own ----

TEST_F(StrictIssuanceTest, BuilderRefusesWhatAStrictParserWouldRejectWhoeverMadeTheCheckedCsr) {
  std::shared_ptr<const profile::Profile> compiled =
      *profile::Profile::Compile("device", config_.profiles().at("device"));
  auto checked = csr::CheckCsr(Csr(P256().get(), Name({{kCn, kUtf8, "GOOD"}}), ""), *compiled);
  ASSERT_TRUE(checked.ok()) << checked.status();
  const IssuanceRequest good = csr::MakeIssuanceRequest(*std::move(checked), compiled, "station", "r");
  ASSERT_TRUE(builder_->Issue(good, NewSerial(), absl::Now()).ok());
  struct Bad {
    std::string name;
    std::function<void(IssuanceRequest*)> mutate;
    std::string message;
  };
  OsslPtr<EVP_PKEY> key(EVP_EC_gen("P-256"));
  const std::vector<Bad> bad = {
      {"printable @", [](IssuanceRequest* c) { c->subject_der = Name({{kCn, kPrintable, "a@b"}}); },
       "which a PrintableString may not"},
      {"country", [](IssuanceRequest* c) { c->subject_der = Name({{"2.5.4.6", kUtf8, "DEU"}}); },
       "is not a country code"},
      {"dns newline",
       [](IssuanceRequest* c) { c->sans = {{csr::SanType::kDns, "a\nb"}}; },
       "is not a valid DNS name"},
      {"dns wildcard",
       [](IssuanceRequest* c) { c->sans = {{csr::SanType::kDns, "*.x.example"}}; },
       "a wildcard ('*.') is not allowed"},
      {"compressed point", [&](IssuanceRequest* c) { c->spki_der = EcSpki(key.get(), "compressed"); },
       "compressed point"},
      {"small-order Ed25519",
       [](IssuanceRequest* c) { c->spki_der = Ed25519Spki(std::string(32, '\0')); }, "small order"},
      {"empty subject, no SAN", [](IssuanceRequest* c) { c->subject_der = der::Tlv(der::kSequence, ""); },
       "needs a subject or a subjectAltName"},
  };
  for (const auto& b : bad) {
    SCOPED_TRACE(b.name);
    IssuanceRequest c = good;
    b.mutate(&c);
    auto issued = builder_->Issue(c, NewSerial(), absl::Now());
    EXPECT_EQ(issued.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(issued.status().message()), HasSubstr(b.message));
  }
}

}  // namespace
}  // namespace linesign::issuance
