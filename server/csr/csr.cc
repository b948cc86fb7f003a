#include "server/csr/csr.h"

#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/strings/ascii.h"
#include "common/der.h"
#include "common/openssl_util.h"
#include "server/csr/strict_rules.h"

namespace linesign::csr {
namespace {

struct GeneralNamesDeleter {
  void operator()(GENERAL_NAMES* p) const { GENERAL_NAMES_free(p); }
};
struct ExtensionsDeleter {
  void operator()(STACK_OF(X509_EXTENSION) * p) const { sk_X509_EXTENSION_pop_free(p, X509_EXTENSION_free); }
};

bool Contains(const google::protobuf::RepeatedPtrField<std::string>& list, absl::string_view v) {
  return std::find(list.begin(), list.end(), v) != list.end();
}

absl::Status Refuse(absl::string_view msg) { return absl::InvalidArgumentError(msg); }

KeyInfo DescribeKey(const EVP_PKEY* key) {
  KeyInfo k;
  k.bits = EVP_PKEY_get_bits(key);
  switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_EC: {
      char group[64] = {0};
      size_t len = 0;
      EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &len);
      std::string g(group, len);
      if (g == "prime256v1") {
        k.type = "ec-p256";
      } else if (g == "secp384r1") {
        k.type = "ec-p384";
      } else {
        k.type = absl::StrCat("EC curve ", g.empty() ? "(explicit parameters)" : g);
      }
      break;
    }
    case EVP_PKEY_ED25519:
      k.type = "ed25519";
      break;
    case EVP_PKEY_RSA:
      k.type = "rsa";
      break;
    default:
      k.type = absl::StrCat("key type ", OBJ_nid2sn(EVP_PKEY_get_base_id(key)));
  }
  return k;
}

std::string NameText(const X509_NAME* name) {
  OsslPtr<BIO> bio(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, n);
}

absl::Status CheckKey(const EVP_PKEY* key, const v1::Profile& profile, absl::string_view profile_name,
                      KeyInfo* info) {
  *info = DescribeKey(key);
  if (info->type == "rsa") {
    if (!Contains(profile.key_types(), "rsa")) {
      return Refuse(absl::StrCat("RSA keys are not allowed by profile '", profile_name, "'"));
    }
    if (info->bits < static_cast<int>(profile.rsa_min_bits()) || info->bits > static_cast<int>(profile.rsa_max_bits())) {
      return Refuse(absl::StrCat("RSA key of ", info->bits, " bits is outside the ", profile.rsa_min_bits(), "..",
                                 profile.rsa_max_bits(), " bits allowed by profile '", profile_name, "'"));
    }
    return absl::OkStatus();
  }
  if (info->type != "ec-p256" && info->type != "ec-p384" && info->type != "ed25519") {
    return Refuse(absl::StrCat("unsupported ", info->type, " (supported: P-256, P-384, Ed25519, RSA)"));
  }
  if (!Contains(profile.key_types(), info->type)) {
    return Refuse(absl::StrCat(info->type, " keys are not allowed by profile '", profile_name, "'"));
  }
  return absl::OkStatus();
}

// CheckSignatureAlgorithm allows SHA-2 with ECDSA or RSA PKCS#1 v1.5, and Ed25519; MD5 and SHA-1 are refused as
// too weak, anything else as unsupported.
absl::Status CheckSignatureAlgorithm(const X509_REQ* req) {
  int nid = X509_REQ_get_signature_nid(req);
  switch (nid) {
    case NID_ecdsa_with_SHA256:
    case NID_ecdsa_with_SHA384:
    case NID_ecdsa_with_SHA512:
    case NID_sha256WithRSAEncryption:
    case NID_sha384WithRSAEncryption:
    case NID_sha512WithRSAEncryption:
    case NID_ED25519:
      return absl::OkStatus();
    case NID_md5WithRSAEncryption:
    case NID_md5WithRSA:
    case NID_sha1WithRSAEncryption:
    case NID_sha1WithRSA:
    case NID_ecdsa_with_SHA1:
    case NID_dsaWithSHA1:
      return Refuse(absl::StrCat("CSR signature algorithm ", OBJ_nid2ln(nid),
                                 " is too weak; sign the CSR with SHA-256 or stronger"));
    default:
      return Refuse(absl::StrCat("CSR signature algorithm ", nid == NID_undef ? "(unknown OID)" : OBJ_nid2ln(nid),
                                 " is not supported (ECDSA or RSA with SHA-256/384/512, or Ed25519)"));
  }
}

// CheckRsaExponent refuses public exponents that make RSA meaningless (1) or invalid (even).
absl::Status CheckRsaExponent(const EVP_PKEY* key) {
  BIGNUM* e = nullptr;
  if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &e) != 1) return Refuse("RSA public exponent is unreadable");
  OsslPtr<BIGNUM> owned(e);
  if (BN_is_one(e) || !BN_is_odd(e)) {
    char* dec = BN_bn2dec(e);
    std::string text = dec != nullptr ? dec : "?";
    OPENSSL_free(dec);
    return Refuse(absl::StrCat("RSA public exponent ", text, " is not allowed (it must be odd and at least 3)"));
  }
  return absl::OkStatus();
}

absl::Status CheckSubject(const X509_NAME* name, const v1::Profile& profile, absl::string_view profile_name) {
  int n = X509_NAME_entry_count(name);
  for (int i = 0; i < n; ++i) {
    const X509_NAME_ENTRY* e = X509_NAME_get_entry(name, i);
    int nid = OBJ_obj2nid(X509_NAME_ENTRY_get_object(e));
    const char* sn = nid == NID_undef ? nullptr : OBJ_nid2sn(nid);
    if (sn == nullptr || !Contains(profile.subject_attributes(), sn)) {
      char oid[80];
      OBJ_obj2txt(oid, sizeof(oid), X509_NAME_ENTRY_get_object(e), 0);
      return Refuse(absl::StrCat("subject attribute ", oid, " is not allowed by profile '", profile_name, "'"));
    }
    const ASN1_STRING* v = X509_NAME_ENTRY_get_data(e);
    if (ASN1_STRING_length(v) == 0) return Refuse(absl::StrCat("subject attribute ", sn, " is empty"));
  }
  for (const auto& req : profile.required_subject_attributes()) {
    if (X509_NAME_get_index_by_NID(name, OBJ_sn2nid(req.c_str()), -1) < 0) {
      return Refuse(absl::StrCat("subject attribute ", req, " is required by profile '", profile_name, "'"));
    }
  }
  return absl::OkStatus();
}

// AttributesDer re-encodes the CSR's attributes: the content of CertificationRequestInfo's [0], as it came (the
// CSR was checked to be canonical DER).
std::string AttributesDer(const X509_REQ* req) {
  std::string out;
  for (int i = 0; i < X509_REQ_get_attr_count(req); ++i) {
    out += ToDer(i2d_X509_ATTRIBUTE, static_cast<const X509_ATTRIBUTE*>(X509_REQ_get_attr(req, i)));
  }
  return out;
}

absl::Status CheckExtensions(X509_REQ* req, const v1::Profile& profile, absl::string_view profile_name,
                             CheckedCsr* out) {
  // The attributes' shape and which extensions may be asked for: the shared rules (strict_rules.h).
  auto requested = ParseRequestAttributes(AttributesDer(req), profile_name);
  if (!requested.ok()) return requested.status();
  if (requested->san_der.empty()) return absl::OkStatus();
  std::unique_ptr<STACK_OF(X509_EXTENSION), ExtensionsDeleter> exts(X509_REQ_get_extensions(req));
  if (exts == nullptr) {
    OpenSslErrors();
    return Refuse("CSR extensionRequest attribute is malformed");
  }
  for (int i = 0; i < sk_X509_EXTENSION_num(exts.get()); ++i) {
    X509_EXTENSION* ext = sk_X509_EXTENSION_value(exts.get(), i);
    int nid = OBJ_obj2nid(X509_EXTENSION_get_object(ext));
    if (nid != NID_subject_alt_name) continue;  // basicConstraints CA:FALSE: what every device certificate gets
    std::unique_ptr<GENERAL_NAMES, GeneralNamesDeleter> names(static_cast<GENERAL_NAMES*>(X509V3_EXT_d2i(ext)));
    if (names == nullptr) return Refuse("CSR subjectAltName extension is malformed");
    for (int j = 0; j < sk_GENERAL_NAME_num(names.get()); ++j) {
      const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), j);
      SanType san_type;
      const ASN1_STRING* s = nullptr;
      switch (gn->type) {
        case GEN_DNS:
          san_type = SanType::kDns, s = gn->d.dNSName;
          break;
        case GEN_URI:
          san_type = SanType::kUri, s = gn->d.uniformResourceIdentifier;
          break;
        case GEN_EMAIL:
          san_type = SanType::kEmail, s = gn->d.rfc822Name;
          break;
        case GEN_IPADD:
          san_type = SanType::kIp, s = gn->d.iPAddress;
          break;
        default:
          return Refuse(absl::StrCat("subjectAltName of type ", gn->type, " is not supported"));
      }
      absl::string_view type = SanTypeName(san_type);
      if (!Contains(profile.san_types(), type)) {
        return Refuse(absl::StrCat("subjectAltName type ", type, " is not allowed by profile '", profile_name, "'"));
      }
      absl::string_view raw(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), ASN1_STRING_length(s));
      if (raw.empty()) return Refuse(absl::StrCat("subjectAltName ", type, " is empty"));
      if (raw.find('\0') != absl::string_view::npos && san_type != SanType::kIp) {
        return Refuse(absl::StrCat("subjectAltName ", type, " contains a NUL byte"));
      }
      if (san_type == SanType::kIp && raw.size() != 4 && raw.size() != 16) {
        return Refuse("subjectAltName IP address must be 4 or 16 bytes");
      }
      out->sans.push_back({san_type, std::string(raw)});
    }
    if (out->sans.empty()) return Refuse("CSR subjectAltName extension is empty");
    const ASN1_OCTET_STRING* value = X509_EXTENSION_get_data(ext);
    out->san_der.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(value)), ASN1_STRING_length(value));
  }
  if (out->san_der != requested->san_der) return Refuse("CSR subjectAltName extension is malformed");
  return CheckGeneralNames(out->san_der, profile.allow_wildcard_dns());
}

// DiagnoseUndecodable says why OpenSSL could not decode `der` when the reason is the subject (a UTF8String that is
// not UTF-8) or the public key (an EC point not on its curve, say), which OpenSSL reports only as a failed parse
// of the whole request.
absl::Status DiagnoseUndecodable(const std::string& der) {
  der::Reader outer(der);
  absl::string_view request, info, version, name, name_whole, spki_content, spki;
  if (outer.Expect(der::kSequence, &request)) {
    der::Reader r(request);
    if (r.Expect(der::kSequence, &info)) {
      der::Reader i(info);
      if (i.Expect(der::kInteger, &version) && i.Expect(der::kSequence, &name, &name_whole) &&
          i.Expect(der::kSequence, &spki_content, &spki)) {
        // OpenSSL refuses a subject value that is not valid for its string type (bad UTF-8) and some key
        // encodings outright: the shared rules name them.
        if (auto st = CheckName(name_whole); !st.ok()) return st;
        if (auto st = CheckPublicKey(spki); !st.ok()) return st;
        const auto* p = reinterpret_cast<const unsigned char*>(spki.data());
        OsslPtr<EVP_PKEY> key(d2i_PUBKEY(nullptr, &p, static_cast<long>(spki.size())));
        bool valid = key != nullptr;
        if (valid) {
          OsslPtr<EVP_PKEY_CTX> ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, key.get(), nullptr));
          valid = ctx != nullptr && EVP_PKEY_public_check(ctx.get()) == 1;
        }
        OpenSslErrors();
        if (!valid) {
          return Refuse("CSR public key cannot be decoded (unsupported algorithm, or an EC point not on its curve)");
        }
      }
    }
  }
  return Refuse("CSR is not a DER PKCS#10 CertificationRequest (malformed or truncated)");
}

}  // namespace

absl::StatusOr<std::string> DecodeCsr(absl::string_view in) {
  if (in.empty()) return Refuse("no CSR: set csr_der or csr_pem");
  if (in.size() > kMaxCsrBytes) {
    return Refuse(absl::StrCat("CSR of ", in.size(), " bytes exceeds the limit of ", kMaxCsrBytes, " bytes"));
  }
  if (!absl::StartsWith(in, "-----BEGIN")) return std::string(in);
  OsslPtr<BIO> bio(BIO_new_mem_buf(in.data(), static_cast<int>(in.size())));
  char* name = nullptr;
  char* header = nullptr;
  unsigned char* data = nullptr;
  long len = 0;
  if (PEM_read_bio(bio.get(), &name, &header, &data, &len) != 1) {
    OpenSslErrors();
    return Refuse("CSR PEM is malformed (bad base64 or missing END line)");
  }
  std::string label = name;
  std::string der(reinterpret_cast<char*>(data), len);
  bool has_headers = header != nullptr && header[0] != '\0';
  OPENSSL_free(name);
  OPENSSL_free(header);
  OPENSSL_free(data);
  if (label != "CERTIFICATE REQUEST" && label != "NEW CERTIFICATE REQUEST") {
    return Refuse(absl::StrCat("PEM label is '", label, "'; expected 'CERTIFICATE REQUEST'"));
  }
  if (has_headers) return Refuse("CSR PEM carries headers (Proc-Type, ...); send a plain CERTIFICATE REQUEST block");
  // Exactly one block: what follows the END line may be whitespace, nothing else.
  char* rest = nullptr;
  long rest_len = BIO_get_mem_data(bio.get(), &rest);
  absl::string_view after(rest, rest_len > 0 ? rest_len : 0);
  after = absl::StripAsciiWhitespace(after);
  if (!after.empty()) {
    if (absl::StrContains(after, "-----BEGIN")) {
      return Refuse("CSR PEM holds more than one PEM block; send exactly one CERTIFICATE REQUEST");
    }
    return Refuse(absl::StrCat("CSR PEM has ", after.size(), " bytes of trailing data after its END line"));
  }
  return der;
}

absl::StatusOr<CheckedCsr> CheckCsrReference(const std::string& der, const v1::Profile& profile,
                                             absl::string_view profile_name) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  OsslPtr<X509_REQ> req(d2i_X509_REQ(nullptr, &p, static_cast<long>(der.size())));
  if (req == nullptr) {
    OpenSslErrors();
    return DiagnoseUndecodable(der);
  }
  if (p != reinterpret_cast<const unsigned char*>(der.data()) + der.size()) {
    return Refuse(absl::StrCat("CSR has ", reinterpret_cast<const unsigned char*>(der.data()) + der.size() - p,
                               " trailing bytes after the DER"));
  }
  // Re-encoding must give back the same bytes: anything else means non-DER (BER) input.
  if (ToDer(i2d_X509_REQ, static_cast<const X509_REQ*>(req.get())) != der) {
    return Refuse("CSR is not in canonical DER (BER constructs or non-minimal lengths)");
  }

  CheckedCsr out;
  out.der = der;
  EVP_PKEY* key = X509_REQ_get0_pubkey(req.get());
  if (key == nullptr) {
    OpenSslErrors();
    return Refuse("CSR public key cannot be decoded (unsupported algorithm or invalid point)");
  }
  if (auto st = CheckKey(key, profile, profile_name, &out.key); !st.ok()) return st;
  if (out.key.type == "rsa") {
    if (auto st = CheckRsaExponent(key); !st.ok()) return st;
  }
  // The key's encoding as the CSR carries it (point form, small-order Ed25519, exponent size), before any
  // signature is verified with it.
  std::string original_spki = ToDer(i2d_X509_PUBKEY, static_cast<const X509_PUBKEY*>(X509_REQ_get_X509_PUBKEY(req.get())));
  if (auto st = CheckPublicKey(original_spki); !st.ok()) return st;
  if (auto st = CheckSignatureAlgorithm(req.get()); !st.ok()) return st;
  int verified = X509_REQ_verify(req.get(), key);
  if (verified != 1) {
    OpenSslErrors();
    return Refuse("CSR signature does not verify with the CSR's own public key");
  }
  const X509_NAME* subject = X509_REQ_get_subject_name(req.get());
  if (auto st = CheckSubject(subject, profile, profile_name); !st.ok()) return st;
  out.subject_der = ToDer(i2d_X509_NAME, subject);
  if (auto st = CheckName(out.subject_der); !st.ok()) return st;
  for (int i = 0; i < X509_NAME_entry_count(subject); ++i) {
    const X509_NAME_ENTRY* e = X509_NAME_get_entry(subject, i);
    const ASN1_OBJECT* obj = X509_NAME_ENTRY_get_object(e);
    int nid = OBJ_obj2nid(obj);
    char oid[80];
    OBJ_obj2txt(oid, sizeof(oid), obj, 1);
    unsigned char* utf8 = nullptr;
    int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(e));
    if (n < 0) {
      OpenSslErrors();
      return Refuse(absl::StrCat("subject attribute ", nid == NID_undef ? oid : OBJ_nid2sn(nid),
                                 " is not valid text for its string type"));
    }
    out.subject_attributes.push_back({nid == NID_undef ? oid : OBJ_nid2sn(nid), std::string(reinterpret_cast<char*>(utf8), n)});
    OPENSSL_free(utf8);
  }
  out.subject_text = NameText(subject);
  if (auto st = CheckExtensions(req.get(), profile, profile_name, &out); !st.ok()) return st;
  out.spki_der = PublicKeyDer(key);
  if (out.subject_der.empty() || out.spki_der.empty()) return absl::InternalError("cannot re-encode the CSR");
  return out;
}

}  // namespace linesign::csr
