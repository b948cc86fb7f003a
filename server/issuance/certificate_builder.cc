#include "server/issuance/certificate_builder.h"

#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <map>

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

std::string EkuOid(const std::string& name) {
  int nid = OBJ_sn2nid(name.c_str());
  if (nid == NID_undef) return name;  // validated as a dotted OID
  char buf[80];
  OBJ_obj2txt(buf, sizeof(buf), OBJ_nid2obj(nid), 1);
  return buf;
}

// KeyUsageDer encodes the named bits of `usages` (RFC 5280 §4.2.1.3) as a DER BIT STRING: trailing zero bits
// dropped, the unused-bit count in the first octet. Empty means digitalSignature.
std::string KeyUsageDer(const google::protobuf::RepeatedPtrField<std::string>& usages) {
  static const std::map<std::string, int> kBits = {{"digitalSignature", 0}, {"nonRepudiation", 1},
                                                   {"keyEncipherment", 2}, {"dataEncipherment", 3},
                                                   {"keyAgreement", 4}};
  uint8_t value = 0;
  int highest = 0;
  for (const auto& u : usages) {
    auto it = kBits.find(u);
    if (it == kBits.end()) continue;  // refused by config::Validate
    value |= static_cast<uint8_t>(0x80 >> it->second);
    highest = std::max(highest, it->second);
  }
  if (value == 0) value = 0x80;  // digitalSignature
  return der::Tlv(der::kBitString, std::string{static_cast<char>(7 - highest), static_cast<char>(value)});
}

// CrlDistributionPointsDer: one DistributionPoint whose fullName is the URI `url`.
std::string CrlDistributionPointsDer(const std::string& url) {
  std::string uri = der::Tlv(0x86, url);                 // GeneralName uniformResourceIdentifier [6]
  std::string full_name = der::Tlv(0xa0, uri);           // DistributionPointName fullName [0] IMPLICIT GeneralNames
  std::string point_name = der::Tlv(0xa0, full_name);    // distributionPoint [0] (a CHOICE: explicit)
  return der::Sequence({der::Sequence({point_name})});
}

// CertificatePoliciesDer: one PolicyInformation (no qualifiers) per OID.
std::string CertificatePoliciesDer(const google::protobuf::RepeatedPtrField<std::string>& oids) {
  std::string infos;
  for (const auto& oid : oids) infos += der::Sequence({der::Oid(oid)});
  return der::Tlv(der::kSequence, infos);
}

}  // namespace

std::string NewSerial() {
  unsigned char bytes[16];
  // RAND_bytes only fails when the CSPRNG cannot be seeded; issuing with a predictable serial is worse than dying.
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) abort();
  bytes[0] &= 0x7f;
  if (bytes[0] == 0) bytes[0] = 0x01;  // keep the encoded length constant at 16 octets
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
                                                                                const hsm::Signer* signer,
                                                                                const v1::ServerConfig& config) {
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

  for (const auto& [name, p] : config.profiles()) {
    Template t;
    t.validity = absl::Hours(24) * p.validity_days();
    t.backdate = absl::Seconds(p.backdate_seconds());
    t.allow_wildcard_dns = p.allow_wildcard_dns();
    // basicConstraints CA:FALSE (an empty SEQUENCE), critical.
    t.fixed_extensions += Extension("2.5.29.19", true, der::Sequence({}));
    // keyUsage, critical.
    t.fixed_extensions += Extension("2.5.29.15", true, KeyUsageDer(p.key_usages()));
    if (!(p.extended_key_usages_size() == 1 && p.extended_key_usages(0) == "none")) {
      std::string oids;
      for (const auto& e : p.extended_key_usages()) oids += der::Oid(EkuOid(e));
      t.fixed_extensions += Extension("2.5.29.37", false, der::Tlv(der::kSequence, oids));
    }
    if (!p.crl_distribution_point().empty()) {
      t.fixed_extensions += Extension("2.5.29.31", false, CrlDistributionPointsDer(p.crl_distribution_point()));
    }
    if (!p.policy_oids().empty()) {
      t.fixed_extensions += Extension("2.5.29.32", false, CertificatePoliciesDer(p.policy_oids()));
    }
    b->templates_.emplace(name, std::move(t));
  }
  return b;
}

absl::StatusOr<std::string> CertificateBuilder::TbsDer(const csr::CheckedCsr& csr, const std::string& profile,
                                                       const std::string& serial, absl::Time now,
                                                       absl::Time* not_before, absl::Time* not_after) const {
  auto it = templates_.find(profile);
  if (it == templates_.end()) return absl::NotFoundError(absl::StrCat("unknown profile '", profile, "'"));
  const Template& t = it->second;
  // What is signed is valid for strict parsers whatever let it through: the same rules as the front.
  LINESIGN_RETURN_IF_ERROR(csr::CheckName(csr.subject_der));
  LINESIGN_RETURN_IF_ERROR(csr::CheckPublicKey(csr.spki_der));
  if (!csr.san_der.empty()) {
    LINESIGN_RETURN_IF_ERROR(csr::CheckGeneralNames(csr.san_der, t.allow_wildcard_dns));
  } else if (csr.subject_der.size() <= 2) {
    return absl::InvalidArgumentError("a certificate needs a subject or a subjectAltName (RFC 5280 §4.1.2.6)");
  }
  absl::Time issued = absl::FromUnixSeconds(absl::ToUnixSeconds(now));
  *not_before = issued - t.backdate;
  *not_after = std::min(issued + t.validity, ca_->not_after);

  LINESIGN_ASSIGN_OR_RETURN(std::string key_id, SubjectKeyId(csr.spki_der));
  std::string extensions = t.fixed_extensions;
  extensions += Extension("2.5.29.14", false, der::OctetString(key_id));
  extensions += aki_extension_;
  if (!csr.san_der.empty()) {
    // RFC 5280 §4.2.1.6: critical when the subject is empty.
    extensions += Extension("2.5.29.17", csr.subject_der.size() <= 2, csr.san_der);
  }
  std::string tbs_content;
  tbs_content.reserve(512 + csr.spki_der.size() + csr.subject_der.size() + extensions.size());
  tbs_content += der::Tlv(der::kContext0Constructed, der::SmallInteger(2));  // version v3
  tbs_content += der::UnsignedInteger(serial);
  tbs_content += hsm::AlgorithmIdentifierDer(signer_->algorithm());
  tbs_content += issuer_der_;
  tbs_content += der::Sequence({der::Time(*not_before), der::Time(*not_after)});
  tbs_content += csr.subject_der;
  tbs_content += csr.spki_der;
  tbs_content += der::Tlv(der::kContext3Constructed, der::Tlv(der::kSequence, extensions));
  return der::Tlv(der::kSequence, tbs_content);
}

absl::StatusOr<IssuedCertificate> CertificateBuilder::Issue(const csr::CheckedCsr& csr, const std::string& profile,
                                                            const std::string& serial, absl::Time now) const {
  IssuedCertificate out;
  LINESIGN_ASSIGN_OR_RETURN(std::string tbs, TbsDer(csr, profile, serial, now, &out.not_before, &out.not_after));
  LINESIGN_ASSIGN_OR_RETURN(std::string signature, signer_->Sign(tbs));
  out.der = der::Sequence({tbs, hsm::AlgorithmIdentifierDer(signer_->algorithm()), der::BitString(signature)});
  out.serial = serial;
  return out;
}

}  // namespace linesign::issuance
