#include "server/issuance/certificate_builder.h"

#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/der.h"
#include "common/status_macros.h"
#include "server/csr/strict_rules.h"

namespace linesign::issuance {
namespace {

std::string Extension(absl::string_view oid, bool critical, absl::string_view value_der) {
  if (critical) return der::Sequence({der::Oid(oid), der::Boolean(true), der::OctetString(value_der)});
  return der::Sequence({der::Oid(oid), der::OctetString(value_der)});
}

absl::Time Asn1TimeToAbsl(const ASN1_TIME* t) {
  struct tm tm = {};
  ASN1_TIME_to_tm(t, &tm);
  return absl::FromTM(tm, absl::UTCTimeZone());
}

// SubjectKeyId is RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING's value.
absl::StatusOr<std::string> SubjectKeyId(absl::string_view spki_der) {
  der::Reader outer(spki_der);
  absl::string_view spki, alg, bits;
  if (!outer.Expect(der::kSequence, &spki)) return absl::InternalError("malformed SubjectPublicKeyInfo");
  der::Reader inner(spki);
  if (!inner.Expect(der::kSequence, &alg) || !inner.Expect(der::kBitString, &bits) || bits.empty()) {
    return absl::InternalError("malformed SubjectPublicKeyInfo");
  }
  bits.remove_prefix(1);  // unused-bits octet
  std::string out(SHA_DIGEST_LENGTH, '\0');
  SHA1(reinterpret_cast<const unsigned char*>(bits.data()), bits.size(), reinterpret_cast<unsigned char*>(out.data()));
  return out;
}

}  // namespace

std::string NewSerial(absl::Time now) {
  unsigned char bytes[16];
  // Milliseconds since the Unix epoch, big-endian, in the first 6 octets: below 2^47 until the year 6429, so the
  // top bit is 0 (positive) and the first octet is not 0 (the encoded length stays 16 octets).
  const uint64_t ms = static_cast<uint64_t>(std::max<int64_t>(absl::ToUnixMillis(now), 1) & ((uint64_t{1} << 47) - 1));
  for (int i = 0; i < 6; ++i) bytes[i] = static_cast<unsigned char>(ms >> (8 * (5 - i)));
  if (bytes[0] == 0) bytes[0] = 0x01;
  // RAND_bytes only fails when the CSPRNG cannot be seeded; issuing with a predictable serial is worse than dying.
  if (RAND_bytes(bytes + 6, sizeof(bytes) - 6) != 1) abort();
  return std::string(reinterpret_cast<char*>(bytes), sizeof(bytes));
}

absl::StatusOr<IssuingCa> LoadIssuingCa(const std::string& chain_file, absl::Time now) {
  auto pem = ReadFile(chain_file);
  if (!pem.ok()) return absl::FailedPreconditionError(absl::StrCat("ca.chain_file: ", pem.status().message()));
  auto certs = ParseCertificatesPem(*pem, absl::StrCat("ca.chain_file ", chain_file));
  if (!certs.ok()) return absl::FailedPreconditionError(certs.status().message());
  IssuingCa ca;
  ca.certificate = std::move((*certs)[0]);
  X509* cert = ca.certificate.get();
  if (X509_check_ca(cert) == 0 || (X509_get_key_usage(cert) & KU_KEY_CERT_SIGN) == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "ca.chain_file ", chain_file, ": the first certificate is not a CA (needs CA:TRUE and keyCertSign)"));
  }
  ca.not_after = Asn1TimeToAbsl(X509_get0_notAfter(cert));
  if (ca.not_after <= now) {
    return absl::FailedPreconditionError(absl::StrCat("ca.chain_file ", chain_file, ": the CA certificate expired at ",
                                                      absl::FormatTime(ca.not_after)));
  }
  ca.certificate_der = CertificateDer(cert);
  ca.chain_pem = PemEncode("CERTIFICATE", ca.certificate_der);
  for (size_t i = 1; i < certs->size(); ++i) ca.chain_pem += PemEncode("CERTIFICATE", CertificateDer((*certs)[i].get()));
  ca.issuer_id = Hex(Sha256(PublicKeyDer(X509_get0_pubkey(cert))));
  return ca;
}

absl::StatusOr<std::unique_ptr<CertificateBuilder>> CertificateBuilder::Create(const IssuingCa* ca,
                                                                                const hsm::Signer* signer) {
  std::unique_ptr<CertificateBuilder> b(new CertificateBuilder(ca, signer));
  X509* cert = ca->certificate.get();
  b->issuer_der_ = ToDer(i2d_X509_NAME, static_cast<const X509_NAME*>(X509_get_subject_name(cert)));
  if (b->issuer_der_.empty()) return absl::InternalError("cannot encode the CA subject");

  std::string ca_key_id;
  if (const ASN1_OCTET_STRING* ski = X509_get0_subject_key_id(cert); ski != nullptr) {
    ca_key_id.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(ski)), ASN1_STRING_length(ski));
  } else {
    LINESIGN_ASSIGN_OR_RETURN(ca_key_id, SubjectKeyId(PublicKeyDer(X509_get0_pubkey(cert))));
  }
  b->aki_extension_ = Extension("2.5.29.35", false, der::Sequence({der::Tlv(der::kContext0Primitive, ca_key_id)}));

  return b;
}

absl::StatusOr<std::string> CertificateBuilder::TbsDer(const IssuanceRequest& request, const std::string& serial,
                                                       absl::Time now, absl::Time* not_before,
                                                       absl::Time* not_after) const {
  if (request.profile == nullptr) return absl::InvalidArgumentError("issuance request names no profile");
  const profile::Profile& t = *request.profile;
  // What is signed is valid for strict parsers whatever let it through: the same rules as the front.
  LINESIGN_RETURN_IF_ERROR(csr::CheckName(request.subject_der));
  LINESIGN_RETURN_IF_ERROR(csr::CheckPublicKey(request.spki_der));
  for (const csr::San& san : request.sans) {
    LINESIGN_RETURN_IF_ERROR(csr::CheckGeneralName(static_cast<uint8_t>(san.type), san.value, t.allow_wildcard_dns()));
  }
  if (request.sans.empty() && request.subject_der.size() <= 2) {
    return absl::InvalidArgumentError("a certificate needs a subject or a subjectAltName (RFC 5280 §4.1.2.6)");
  }
  absl::Duration validity = t.validity();
  if (request.validity.has_value()) validity = std::min(validity, *request.validity);
  absl::Time issued = absl::FromUnixSeconds(absl::ToUnixSeconds(now));
  *not_before = issued - t.backdate();
  *not_after = std::min(issued + validity, ca_->not_after);

  LINESIGN_ASSIGN_OR_RETURN(std::string key_id, SubjectKeyId(request.spki_der));
  std::string extensions = t.fixed_extensions();
  extensions += Extension("2.5.29.14", false, der::OctetString(key_id));
  extensions += aki_extension_;
  if (!request.sans.empty()) {
    // RFC 5280 §4.2.1.6: critical when the subject is empty. Encoded from the typed SANs: for a CSR's SANs this
    // gives back the CSR's bytes (checked canonical DER, values copied verbatim).
    extensions += Extension("2.5.29.17", request.subject_der.size() <= 2, csr::GeneralNamesDer(request.sans));
  }
  std::string tbs_content;
  tbs_content.reserve(512 + request.spki_der.size() + request.subject_der.size() + extensions.size());
  tbs_content += der::Tlv(der::kContext0Constructed, der::SmallInteger(2));  // version v3
  tbs_content += der::UnsignedInteger(serial);
  tbs_content += hsm::AlgorithmIdentifierDer(signer_->algorithm());
  tbs_content += issuer_der_;
  tbs_content += der::Sequence({der::Time(*not_before), der::Time(*not_after)});
  tbs_content += request.subject_der;
  tbs_content += request.spki_der;
  tbs_content += der::Tlv(der::kContext3Constructed, der::Tlv(der::kSequence, extensions));
  return der::Tlv(der::kSequence, tbs_content);
}

absl::StatusOr<IssuedCertificate> CertificateBuilder::Issue(const IssuanceRequest& request, const std::string& serial,
                                                            absl::Time now) const {
  IssuedCertificate out;
  LINESIGN_ASSIGN_OR_RETURN(std::string tbs, TbsDer(request, serial, now, &out.not_before, &out.not_after));
  auto signature = signer_->Sign(tbs);
  if (!signature.ok()) {
    // The signer's code stands (Unavailable: the HSM failed or is away, the station retries); the message says
    // that nothing was issued, whose key it was and the PKCS#11 reason.
    return absl::Status(signature.status().code(),
                        absl::StrCat("certificate not issued: the CA key did not sign (", signer_->description(),
                                     "): ", signature.status().message()));
  }
  out.der = der::Sequence({tbs, hsm::AlgorithmIdentifierDer(signer_->algorithm()), der::BitString(*signature)});
  out.serial = serial;
  return out;
}

}  // namespace linesign::issuance
