#include "server/revocation/crl_builder.h"

#include <openssl/bn.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/der.h"
#include "common/openssl_util.h"

namespace linesign::revocation {
namespace {

struct Asn1Deleter {
  // ASN1_TIME, ASN1_INTEGER and ASN1_ENUMERATED are all ASN1_STRING.
  void operator()(ASN1_STRING* p) const { ASN1_STRING_free(p); }
  void operator()(AUTHORITY_KEYID* p) const { AUTHORITY_KEYID_free(p); }
  void operator()(X509_REVOKED* p) const { X509_REVOKED_free(p); }
};
template <typename T>
using Asn1Ptr = std::unique_ptr<T, Asn1Deleter>;

absl::Status Failure(absl::string_view what) {
  return absl::InternalError(absl::StrCat("CRL: ", what, ": ", OpenSslErrors()));
}

Asn1Ptr<ASN1_TIME> Asn1Time(absl::Time t) {
  // ASN1_TIME_set picks UTCTime up to 2049 and GeneralizedTime after, as RFC 5280 §5.1.2.4 requires.
  return Asn1Ptr<ASN1_TIME>(ASN1_TIME_set(nullptr, static_cast<time_t>(absl::ToUnixSeconds(t))));
}

}  // namespace

const char* ReasonName(int reason) {
  switch (reason) {
    case 0: return "unspecified";
    case 1: return "keyCompromise";
    case 2: return "cACompromise";
    case 3: return "affiliationChanged";
    case 4: return "superseded";
    case 5: return "cessationOfOperation";
    case 6: return "certificateHold";
    case 8: return "removeFromCRL";
    case 9: return "privilegeWithdrawn";
    case 10: return "aACompromise";
    default: return "";
  }
}

absl::StatusOr<std::unique_ptr<CrlBuilder>> CrlBuilder::Create(const issuance::IssuingCa* ca,
                                                                const hsm::Signer* signer) {
  std::unique_ptr<CrlBuilder> b(new CrlBuilder(ca, signer));
  X509* cert = ca->certificate.get();
  b->issuer_der_ = ToDer(i2d_X509_NAME, static_cast<const X509_NAME*>(X509_get_subject_name(cert)));
  if (b->issuer_der_.empty()) return absl::InternalError("CRL: cannot encode the CA subject");
  if (const ASN1_OCTET_STRING* ski = X509_get0_subject_key_id(cert); ski != nullptr) {
    b->key_id_.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(ski)), ASN1_STRING_length(ski));
  } else {
    // RFC 5280 §4.2.1.2 method (1), as the certificate builder computes it: SHA-1 of the subjectPublicKey bits.
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (X509_pubkey_digest(cert, EVP_sha1(), md, &len) != 1) return Failure("cannot compute the CA key id");
    b->key_id_.assign(reinterpret_cast<const char*>(md), len);
  }
  return b;
}

absl::StatusOr<std::string> CrlBuilder::Build(const CrlContent& c) const {
  if (c.number < 1) return absl::InvalidArgumentError(absl::StrCat("CRL number ", c.number, " is not positive"));
  if (c.next_update <= c.this_update) {
    return absl::InvalidArgumentError("CRL nextUpdate must be after thisUpdate");
  }
  const std::string& alg = hsm::AlgorithmIdentifierDer(signer_->algorithm());
  // OpenSSL has no setter for the TBSCertList's signature algorithm (X509_CRL_sign sets it while signing with a
  // key it holds, which the HSM key is not): start from a minimal v2 CRL carrying the right algorithm and
  // issuer, and fill in the rest through the API.
  const std::string stub = der::Sequence(
      {der::Sequence({der::SmallInteger(1), alg, issuer_der_, der::Time(c.this_update)}), alg, der::BitString("")});
  const auto* p = reinterpret_cast<const unsigned char*>(stub.data());
  OsslPtr<X509_CRL> crl(d2i_X509_CRL(nullptr, &p, static_cast<long>(stub.size())));
  if (crl == nullptr) return Failure("cannot start the CRL");
  auto this_update = Asn1Time(c.this_update);
  auto next_update = Asn1Time(c.next_update);
  if (this_update == nullptr || next_update == nullptr || X509_CRL_set1_lastUpdate(crl.get(), this_update.get()) != 1 ||
      X509_CRL_set1_nextUpdate(crl.get(), next_update.get()) != 1) {
    return Failure("cannot set thisUpdate / nextUpdate");
  }
  BIGNUM* bn = nullptr;
  for (const store::RevokedEntry& e : c.entries) {
    if (e.serial_hex.empty() || e.serial_hex.size() > 42 ||
        !std::all_of(e.serial_hex.begin(), e.serial_hex.end(), [](char ch) { return absl::ascii_isxdigit(ch); })) {
      BN_free(bn);
      return absl::InvalidArgumentError(absl::StrCat("CRL entry serial '", e.serial_hex, "' is not hexadecimal"));
    }
    if (ReasonName(e.reason)[0] == '\0') {
      BN_free(bn);
      return absl::InvalidArgumentError(
          absl::StrCat("CRL entry ", e.serial_hex, ": reason ", e.reason, " is not an RFC 5280 CRLReason"));
    }
    Asn1Ptr<X509_REVOKED> r(X509_REVOKED_new());
    if (BN_hex2bn(&bn, e.serial_hex.c_str()) == 0) return Failure("serial");
    Asn1Ptr<ASN1_INTEGER> serial(BN_to_ASN1_INTEGER(bn, nullptr));
    auto date = Asn1Time(absl::FromUnixSeconds(e.revoked_at));
    if (r == nullptr || serial == nullptr || date == nullptr ||
        X509_REVOKED_set_serialNumber(r.get(), serial.get()) != 1 ||
        X509_REVOKED_set_revocationDate(r.get(), date.get()) != 1) {
      BN_free(bn);
      return Failure("cannot make an entry");
    }
    if (e.reason != 0) {
      Asn1Ptr<ASN1_ENUMERATED> reason(ASN1_ENUMERATED_new());
      if (reason == nullptr || ASN1_ENUMERATED_set(reason.get(), e.reason) != 1 ||
          X509_REVOKED_add1_ext_i2d(r.get(), NID_crl_reason, reason.get(), 0, 0) != 1) {
        BN_free(bn);
        return Failure("cannot add a reasonCode");
      }
    }
    if (X509_CRL_add0_revoked(crl.get(), r.get()) != 1) {
      BN_free(bn);
      return Failure("cannot add an entry");
    }
    r.release();  // owned by the CRL now
  }
  BN_free(bn);
  if (X509_CRL_sort(crl.get()) != 1) return Failure("cannot sort the entries");

  Asn1Ptr<ASN1_INTEGER> number(ASN1_INTEGER_new());
  if (number == nullptr || ASN1_INTEGER_set_int64(number.get(), c.number) != 1 ||
      X509_CRL_add1_ext_i2d(crl.get(), NID_crl_number, number.get(), 0, 0) != 1) {
    return Failure("cannot add the cRLNumber");
  }
  Asn1Ptr<AUTHORITY_KEYID> akid(AUTHORITY_KEYID_new());
  if (akid == nullptr) return Failure("cannot make the authorityKeyIdentifier");
  akid->keyid = ASN1_OCTET_STRING_new();
  if (akid->keyid == nullptr ||
      ASN1_OCTET_STRING_set(akid->keyid, reinterpret_cast<const unsigned char*>(key_id_.data()),
                            static_cast<int>(key_id_.size())) != 1 ||
      X509_CRL_add1_ext_i2d(crl.get(), NID_authority_key_identifier, akid.get(), 0, 0) != 1) {
    return Failure("cannot add the authorityKeyIdentifier");
  }

  unsigned char* tbs_bytes = nullptr;
  int tbs_len = i2d_re_X509_CRL_tbs(crl.get(), &tbs_bytes);
  if (tbs_len <= 0) return Failure("cannot encode the TBSCertList");
  std::string tbs(reinterpret_cast<char*>(tbs_bytes), tbs_len);
  OPENSSL_free(tbs_bytes);

  auto signature = signer_->Sign(tbs);
  if (!signature.ok()) return signature.status();
  std::string out = der::Sequence({tbs, alg, der::BitString(*signature)});

  // Parsed back whole and verified: a CRL that OpenSSL reads differently, or that the CA key does not verify,
  // never leaves.
  p = reinterpret_cast<const unsigned char*>(out.data());
  OsslPtr<X509_CRL> check(d2i_X509_CRL(nullptr, &p, static_cast<long>(out.size())));
  if (check == nullptr || p != reinterpret_cast<const unsigned char*>(out.data()) + out.size()) {
    return Failure("the signed CRL does not parse");
  }
  if (X509_CRL_verify(check.get(), X509_get0_pubkey(ca_->certificate.get())) != 1) {
    return Failure("the signed CRL does not verify with the CA certificate's key");
  }
  return out;
}

}  // namespace linesign::revocation
