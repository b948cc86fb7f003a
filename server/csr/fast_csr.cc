// The hot path of CheckCsr: a strict DER decoder for PKCS#10 (RFC 2986) and OpenSSL's primitives for the
// signature, without OpenSSL's X509_REQ layer (whose public-key decoding through the 3.0 decoder framework costs
// more than the signature check itself). Only the shapes devices send are taken apart here; anything else, and
// every refusal, goes to CheckCsrReference, so messages and edge cases are the reference's.
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/der.h"
#include "common/utf8.h"
#include "common/openssl_util.h"
#include "server/csr/csr.h"
#include "server/csr/strict_rules.h"

namespace linesign::csr {
namespace {

using der::Reader;

constexpr uint8_t kUtf8String = 0x0c, kPrintableString = 0x13, kT61String = 0x14, kIa5String = 0x16,
                  kVisibleString = 0x1a;

struct Oids {
  std::string ec_public_key = der::Oid("1.2.840.10045.2.1");
  std::string p256 = der::Oid("1.2.840.10045.3.1.7");
  std::string p384 = der::Oid("1.3.132.0.34");
  std::string rsa = der::Oid("1.2.840.113549.1.1.1");
  std::string ed25519 = der::Oid("1.3.101.112");
  std::string ecdsa_sha256 = der::Oid("1.2.840.10045.4.3.2");
  std::string ecdsa_sha384 = der::Oid("1.2.840.10045.4.3.3");
  std::string ecdsa_sha512 = der::Oid("1.2.840.10045.4.3.4");
  std::string rsa_sha256 = der::Oid("1.2.840.113549.1.1.11");
  std::string rsa_sha384 = der::Oid("1.2.840.113549.1.1.12");
  std::string rsa_sha512 = der::Oid("1.2.840.113549.1.1.13");
  std::string extension_request = der::Oid("1.2.840.113549.1.9.14");
  std::string san = der::Oid("2.5.29.17");
  std::string basic_constraints = der::Oid("2.5.29.19");
  // Subject attributes this decoder names itself (OpenSSL's short names); others go to the reference.
  std::vector<std::pair<std::string, std::string>> attributes = {
      {der::Oid("2.5.4.3"), "CN"},  {der::Oid("2.5.4.10"), "O"}, {der::Oid("2.5.4.11"), "OU"},
      {der::Oid("2.5.4.6"), "C"},   {der::Oid("2.5.4.7"), "L"},  {der::Oid("2.5.4.8"), "ST"},
      {der::Oid("2.5.4.5"), "serialNumber"}, {der::Oid("2.5.4.46"), "dnQualifier"},
      {der::Oid("1.2.840.113549.1.9.1"), "emailAddress"}};
};
const Oids& O() {
  static const Oids* o = new Oids();
  return *o;
}

enum class Alg { kEcdsaSha256, kEcdsaSha384, kEcdsaSha512, kRsaSha256, kRsaSha384, kRsaSha512, kEd25519 };

// Parsed is what the decoder took apart; string_views point into the CSR.
struct Parsed {
  absl::string_view info;     // CertificationRequestInfo, whole TLV: what the signature covers
  absl::string_view subject;  // Name, whole TLV
  absl::string_view spki;     // SubjectPublicKeyInfo, whole TLV
  absl::string_view key_alg_oid, key_alg_params, key_bits;  // key_bits without the unused-bits octet
  absl::string_view attributes;  // [0] content
  Alg alg;
  absl::string_view signature;  // BIT STRING value without the unused-bits octet
};

bool ParseAlgorithm(absl::string_view whole_alg_id, absl::string_view* oid, absl::string_view* params) {
  Reader r(whole_alg_id);
  absl::string_view content;
  if (!r.Expect(der::kSequence, &content) || !r.empty()) return false;
  Reader a(content);
  absl::string_view ignored;
  if (!a.Expect(der::kOid, &ignored, oid)) return false;
  *params = absl::string_view();
  if (!a.empty()) {
    uint8_t tag;
    if (!a.Next(&tag, &ignored, params)) return false;
  }
  return a.empty();
}

bool BitStringValue(absl::string_view content, absl::string_view* value) {
  if (content.empty() || content[0] != 0) return false;
  *value = content.substr(1);
  return true;
}

bool Decode(absl::string_view der, Parsed* p) {
  Reader outer(der);
  absl::string_view request;
  if (!outer.Expect(der::kSequence, &request) || !outer.empty()) return false;
  Reader r(request);
  absl::string_view info_content, alg_content, alg_whole, sig_content;
  if (!r.Expect(der::kSequence, &info_content, &p->info) || !r.Expect(der::kSequence, &alg_content, &alg_whole) ||
      !r.Expect(der::kBitString, &sig_content) || !r.empty() || !BitStringValue(sig_content, &p->signature)) {
    return false;
  }
  absl::string_view sig_oid, sig_params;
  if (!ParseAlgorithm(alg_whole, &sig_oid, &sig_params)) return false;
  const Oids& o = O();
  const std::string null_params("\x05\x00", 2);
  if (sig_oid == o.ecdsa_sha256 && sig_params.empty()) {
    p->alg = Alg::kEcdsaSha256;
  } else if (sig_oid == o.ecdsa_sha384 && sig_params.empty()) {
    p->alg = Alg::kEcdsaSha384;
  } else if (sig_oid == o.ecdsa_sha512 && sig_params.empty()) {
    p->alg = Alg::kEcdsaSha512;
  } else if (sig_oid == o.rsa_sha256 && sig_params == null_params) {
    p->alg = Alg::kRsaSha256;
  } else if (sig_oid == o.rsa_sha384 && sig_params == null_params) {
    p->alg = Alg::kRsaSha384;
  } else if (sig_oid == o.rsa_sha512 && sig_params == null_params) {
    p->alg = Alg::kRsaSha512;
  } else if (sig_oid == o.ed25519 && sig_params.empty()) {
    p->alg = Alg::kEd25519;
  } else {
    return false;
  }

  Reader info(info_content);
  absl::string_view version, subject_content, spki_content;
  if (!info.Expect(der::kInteger, &version) || version != absl::string_view("\x00", 1) ||
      !info.Expect(der::kSequence, &subject_content, &p->subject) ||
      !info.Expect(der::kSequence, &spki_content, &p->spki) ||
      !info.Expect(der::kContext0Constructed, &p->attributes) || !info.empty()) {
    return false;
  }
  Reader spki(spki_content);
  absl::string_view alg_id_content, alg_id_whole, key_bits;
  if (!spki.Expect(der::kSequence, &alg_id_content, &alg_id_whole) || !spki.Expect(der::kBitString, &key_bits) ||
      !spki.empty() || !BitStringValue(key_bits, &p->key_bits)) {
    return false;
  }
  return ParseAlgorithm(alg_id_whole, &p->key_alg_oid, &p->key_alg_params);
}

// Latin1ToUtf8: the one-octet string types, as OpenSSL converts them (each octet one character).
std::string Latin1ToUtf8(absl::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (unsigned char c : in) {
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back(static_cast<char>(0xc0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3f)));
    }
  }
  return out;
}

// IsStrictDer walks every constructed TLV of `data` with the strict reader: definite, minimal lengths only.
bool IsStrictDer(absl::string_view data, int depth = 0) {
  if (depth > 32) return false;
  Reader r(data);
  uint8_t tag;
  absl::string_view content;
  while (r.Next(&tag, &content)) {
    if ((tag & 0x20) != 0 && !IsStrictDer(content, depth + 1)) return false;
  }
  return r.ok();
}

// Subject walks the Name: one attribute per RDN, known types and string types only.
bool Subject(absl::string_view name_whole, std::vector<SubjectAttribute>* out) {
  Reader outer(name_whole);
  absl::string_view rdns;
  if (!outer.Expect(der::kSequence, &rdns)) return false;
  Reader r(rdns);
  while (!r.empty()) {
    absl::string_view set, atv, type_content, type_whole, value;
    if (!r.Expect(der::kSet, &set)) return false;
    Reader s(set);
    if (!s.Expect(der::kSequence, &atv) || !s.empty()) return false;  // multi-valued RDNs: the reference's
    Reader a(atv);
    uint8_t tag;
    if (!a.Expect(der::kOid, &type_content, &type_whole) || !a.Next(&tag, &value) || !a.empty()) return false;
    const auto& known = O().attributes;
    auto it = std::find_if(known.begin(), known.end(), [&](const auto& k) { return k.first == type_whole; });
    if (it == known.end()) return false;
    std::string text;
    switch (tag) {
      case kUtf8String:
        if (!IsValidUtf8(value)) return false;
        text = std::string(value);
        break;
      case kPrintableString:
      case kT61String:
      case kIa5String:
      case kVisibleString:
        text = Latin1ToUtf8(value);
        break;
      default:
        return false;
    }
    out->push_back({it->second, std::move(text)});
  }
  return r.ok();
}

// Sans takes apart the GeneralNames of a SAN into typed SANs; false for anything unusual.
bool Sans(absl::string_view general_names, const v1::Profile& profile, std::vector<San>* out) {
  if (!ParseSans(general_names, out)) return false;
  for (const San& san : *out) {
    if (san.value.empty() || std::find(profile.san_types().begin(), profile.san_types().end(),
                                       SanTypeName(san.type)) == profile.san_types().end()) {
      return false;
    }
    if (san.type == SanType::kIp ? san.value.size() != 4 && san.value.size() != 16
                                 : san.value.find('\0') != std::string::npos) {
      return false;
    }
  }
  return !out->empty();
}

bool Allowed(const google::protobuf::RepeatedPtrField<std::string>& list, absl::string_view v) {
  return std::find(list.begin(), list.end(), v) != list.end();
}

// Verify checks the signature over `p.info` with the key in `p`, filling `key`. False on any failure.
bool Verify(const Parsed& p, const v1::Profile& profile, KeyInfo* key) {
  const Oids& o = O();
  const auto* data = reinterpret_cast<const unsigned char*>(p.info.data());
  unsigned char digest[SHA512_DIGEST_LENGTH];
  size_t digest_len = 0;
  int md_nid = 0;
  switch (p.alg) {
    case Alg::kEcdsaSha256:
    case Alg::kRsaSha256:
      SHA256(data, p.info.size(), digest), digest_len = SHA256_DIGEST_LENGTH, md_nid = NID_sha256;
      break;
    case Alg::kEcdsaSha384:
    case Alg::kRsaSha384:
      SHA384(data, p.info.size(), digest), digest_len = SHA384_DIGEST_LENGTH, md_nid = NID_sha384;
      break;
    case Alg::kEcdsaSha512:
    case Alg::kRsaSha512:
      SHA512(data, p.info.size(), digest), digest_len = SHA512_DIGEST_LENGTH, md_nid = NID_sha512;
      break;
    case Alg::kEd25519:
      break;
  }
  const auto* sig = reinterpret_cast<const unsigned char*>(p.signature.data());
  const bool ecdsa = p.alg == Alg::kEcdsaSha256 || p.alg == Alg::kEcdsaSha384 || p.alg == Alg::kEcdsaSha512;
  const bool rsa = p.alg == Alg::kRsaSha256 || p.alg == Alg::kRsaSha384 || p.alg == Alg::kRsaSha512;

  if (p.key_alg_oid == o.ec_public_key && ecdsa) {
    // One EC_KEY per curve and thread, reused: only the public point changes.
    int curve;
    if (p.key_alg_params == o.p256) {
      curve = NID_X9_62_prime256v1, key->type = "ec-p256", key->bits = 256;
    } else if (p.key_alg_params == o.p384) {
      curve = NID_secp384r1, key->type = "ec-p384", key->bits = 384;
    } else {
      return false;
    }
    if (!Allowed(profile.key_types(), key->type)) return false;
    thread_local std::unique_ptr<EC_KEY, decltype(&EC_KEY_free)> p256(EC_KEY_new_by_curve_name(NID_X9_62_prime256v1),
                                                                      EC_KEY_free);
    thread_local std::unique_ptr<EC_KEY, decltype(&EC_KEY_free)> p384(EC_KEY_new_by_curve_name(NID_secp384r1),
                                                                      EC_KEY_free);
    EC_KEY* ec = curve == NID_X9_62_prime256v1 ? p256.get() : p384.get();
    const EC_GROUP* group = EC_KEY_get0_group(ec);
    std::unique_ptr<EC_POINT, decltype(&EC_POINT_free)> point(EC_POINT_new(group), EC_POINT_free);
    // oct2point checks that the point is on the curve.
    if (EC_POINT_oct2point(group, point.get(), reinterpret_cast<const unsigned char*>(p.key_bits.data()),
                           p.key_bits.size(), nullptr) != 1 ||
        EC_POINT_is_at_infinity(group, point.get()) || EC_KEY_set_public_key(ec, point.get()) != 1) {
      OpenSslErrors();
      return false;
    }
    const unsigned char* q = sig;
    std::unique_ptr<ECDSA_SIG, decltype(&ECDSA_SIG_free)> s(d2i_ECDSA_SIG(nullptr, &q, p.signature.size()),
                                                             ECDSA_SIG_free);
    if (s == nullptr || q != sig + p.signature.size()) {
      OpenSslErrors();
      return false;
    }
    bool ok = ECDSA_do_verify(digest, static_cast<int>(digest_len), s.get(), ec) == 1;
    OpenSslErrors();
    return ok;
  }
  if (p.key_alg_oid == o.rsa && rsa && p.key_alg_params == absl::string_view("\x05\x00", 2)) {
    key->type = "rsa";
    Reader k(p.key_bits);
    absl::string_view pub, n, e;
    if (!k.Expect(der::kSequence, &pub) || !k.empty()) return false;
    Reader f(pub);
    if (!f.Expect(der::kInteger, &n) || !f.Expect(der::kInteger, &e) || !f.empty()) return false;
    // Positive, minimal INTEGERs only (the reference re-encodes; anything else is its to judge).
    for (absl::string_view v : {n, e}) {
      if (v.empty() || (v[0] & 0x80) || (v.size() > 1 && v[0] == 0 && !(v[1] & 0x80))) return false;
    }
    OsslPtr<BIGNUM> bn_n(BN_bin2bn(reinterpret_cast<const unsigned char*>(n.data()), n.size(), nullptr));
    OsslPtr<BIGNUM> bn_e(BN_bin2bn(reinterpret_cast<const unsigned char*>(e.data()), e.size(), nullptr));
    key->bits = BN_num_bits(bn_n.get());
    if (!Allowed(profile.key_types(), "rsa") || key->bits < static_cast<int>(profile.rsa_min_bits()) ||
        key->bits > static_cast<int>(profile.rsa_max_bits()) || BN_is_one(bn_e.get()) || !BN_is_odd(bn_e.get())) {
      return false;
    }
    std::unique_ptr<RSA, decltype(&RSA_free)> r(RSA_new(), RSA_free);
    if (RSA_set0_key(r.get(), bn_n.release(), bn_e.release(), nullptr) != 1) return false;
    bool ok = RSA_verify(md_nid, digest, static_cast<unsigned>(digest_len), sig,
                         static_cast<unsigned>(p.signature.size()), r.get()) == 1;
    OpenSslErrors();
    return ok;
  }
  if (p.key_alg_oid == o.ed25519 && p.alg == Alg::kEd25519 && p.key_alg_params.empty()) {
    key->type = "ed25519", key->bits = 256;
    if (!Allowed(profile.key_types(), key->type) || p.key_bits.size() != 32) return false;
    OsslPtr<EVP_PKEY> pkey(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr,
                                                       reinterpret_cast<const unsigned char*>(p.key_bits.data()),
                                                       p.key_bits.size()));
    OsslPtr<EVP_MD_CTX> ctx(EVP_MD_CTX_new());
    bool ok = pkey != nullptr && EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, pkey.get()) == 1 &&
              EVP_DigestVerify(ctx.get(), sig, p.signature.size(), data, p.info.size()) == 1;
    OpenSslErrors();
    return ok;
  }
  return false;
}

std::string SubjectText(absl::string_view subject_der) {
  const auto* q = reinterpret_cast<const unsigned char*>(subject_der.data());
  std::unique_ptr<X509_NAME, decltype(&X509_NAME_free)> name(d2i_X509_NAME(nullptr, &q, subject_der.size()),
                                                             X509_NAME_free);
  if (name == nullptr) return "";
  OsslPtr<BIO> bio(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(bio.get(), name.get(), 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, n);
}

// Fast returns the checked CSR, or nullopt when anything is unusual or refused (the reference decides).
std::optional<CheckedCsr> Fast(const std::string& der, const v1::Profile& profile) {
  Parsed p;
  if (!Decode(der, &p)) return std::nullopt;
  CheckedCsr out;
  // The shared rules (strict_rules.h) before the signature is verified with the key; the reference names what
  // is wrong.
  if (!CheckPublicKey(p.spki).ok()) return std::nullopt;
  if (!Verify(p, profile, &out.key)) return std::nullopt;
  if (!Subject(p.subject, &out.subject_attributes) || !CheckName(p.subject).ok()) return std::nullopt;
  for (const auto& a : out.subject_attributes) {
    if (a.value.empty() || !Allowed(profile.subject_attributes(), a.name)) return std::nullopt;
  }
  for (const auto& req : profile.required_subject_attributes()) {
    if (std::none_of(out.subject_attributes.begin(), out.subject_attributes.end(),
                     [&](const SubjectAttribute& a) { return a.name == req; })) {
      return std::nullopt;
    }
  }
  auto ext = ParseRequestAttributes(p.attributes, "");
  if (!ext.ok()) return std::nullopt;
  if (!ext->san_der.empty() && (!Sans(ext->san_der, profile, &out.sans) ||
                                !CheckGeneralNames(ext->san_der, profile.allow_wildcard_dns()).ok())) {
    return std::nullopt;
  }
  out.der = der;
  out.subject_der = std::string(p.subject);
  out.spki_der = std::string(p.spki);
  out.san_der = std::move(ext->san_der);
  out.subject_text = SubjectText(p.subject);
  if (out.subject_text.empty() && !out.subject_attributes.empty()) return std::nullopt;
  return out;
}

}  // namespace

std::optional<CheckedCsr> CheckCsrFastOnly(const std::string& der, const v1::Profile& profile) {
  if (!IsStrictDer(der)) return std::nullopt;
  return Fast(der, profile);
}

absl::StatusOr<CheckedCsr> CheckCsr(const std::string& der, const v1::Profile& profile,
                                    absl::string_view profile_name) {
  if (!IsStrictDer(der)) {
    // Not DER. The reference names what is wrong; when it would take the CSR anyway (it accepts BER inside the
    // request), linesign does not.
    auto reference = CheckCsrReference(der, profile, profile_name);
    if (!reference.ok()) return reference.status();
    return absl::InvalidArgumentError("CSR is not in canonical DER (BER constructs or non-minimal lengths)");
  }
  if (auto fast = Fast(der, profile); fast.has_value()) return *std::move(fast);
  // Refused, or a shape the fast decoder leaves to the reference (other attributes, string types, RDNs).
  return CheckCsrReference(der, profile, profile_name);
}

absl::StatusOr<CheckedCsr> CheckCsr(const std::string& der, const profile::Profile& profile) {
  auto checked = CheckCsr(der, profile.config(), profile.name());
  if (!checked.ok()) return checked;
  if (auto st = profile.CheckValues(checked->subject_attributes, checked->sans); !st.ok()) return st;
  if (auto st = profile.MakeSans(checked->subject_attributes, &checked->sans); !st.ok()) return st;
  return checked;
}

issuance::IssuanceRequest MakeIssuanceRequest(CheckedCsr csr, std::shared_ptr<const profile::Profile> profile,
                                              std::string station, std::string request_id) {
  issuance::IssuanceRequest r;
  r.reason = issuance::IssuanceRequest::Reason::kNew;
  r.subject_der = std::move(csr.subject_der);
  r.subject_text = std::move(csr.subject_text);
  r.spki_der = std::move(csr.spki_der);
  r.sans = std::move(csr.sans);
  r.profile = std::move(profile);
  r.requester = {issuance::IssuanceRequest::Requester::Kind::kStation, std::move(station), std::move(request_id)};
  r.csr_sha256 = Hex(Sha256(csr.der));
  return r;
}

}  // namespace linesign::csr
