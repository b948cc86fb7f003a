#include "server/tls/tls_pki.h"

#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/openssl_util.h"
#include "common/status_macros.h"
#include "server/auth/station_credential.h"

namespace linesign::tls {
namespace {

absl::Status OpenSslFailure(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", OpenSslErrors()));
}

std::string BioText(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  return std::string(data, n);
}

absl::StatusOr<OsslPtr<EVP_PKEY>> NewKey() {
  OsslPtr<EVP_PKEY> key(EVP_EC_gen("P-256"));
  if (key == nullptr) return OpenSslFailure("cannot generate a P-256 key");
  return key;
}

absl::StatusOr<OsslPtr<EVP_PKEY>> ParseKey(const std::string& pem) {
  OsslPtr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  OsslPtr<EVP_PKEY> key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) return OpenSslFailure("cannot read the CA key");
  return key;
}

std::string KeyPem(EVP_PKEY* key) {
  OsslPtr<BIO> bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  return BioText(bio.get());
}

std::string CertPem(X509* cert) {
  OsslPtr<BIO> bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), cert);
  return BioText(bio.get());
}

absl::Status AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) return OpenSslFailure(absl::StrCat("cannot make extension ", OBJ_nid2sn(nid), "=", value));
  int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return ok == 1 ? absl::OkStatus() : OpenSslFailure("cannot add an extension");
}

// NewCertificate fills everything but the extensions and the signature.
absl::StatusOr<OsslPtr<X509>> NewCertificate(const std::string& common_name, EVP_PKEY* key, X509* issuer,
                                             absl::Time not_before, absl::Time not_after) {
  OsslPtr<X509> cert(X509_new());
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof(serial)) != 1) return OpenSslFailure("no random serial");
  serial[0] &= 0x7f;
  serial[0] |= 0x01;  // never a leading zero octet
  OsslPtr<BIGNUM> bn(BN_bin2bn(serial, sizeof(serial), nullptr));
  X509_NAME* name = X509_get_subject_name(cert.get());
  if (X509_set_version(cert.get(), X509_VERSION_3) != 1 ||
      BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get())) == nullptr ||
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0) != 1 ||
      X509_set_issuer_name(cert.get(), issuer != nullptr ? X509_get_subject_name(issuer) : name) != 1 ||
      ASN1_TIME_set(X509_getm_notBefore(cert.get()), absl::ToTimeT(not_before)) == nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(cert.get()), absl::ToTimeT(not_after)) == nullptr ||
      X509_set_pubkey(cert.get(), key) != 1) {
    return OpenSslFailure("cannot fill a certificate");
  }
  return cert;
}

absl::StatusOr<OsslPtr<X509>> ParseOne(const std::string& pem) {
  LINESIGN_ASSIGN_OR_RETURN(auto certs, ParseCertificatesPem(pem, "certificate"));
  return std::move(certs.front());
}

}  // namespace

absl::StatusOr<KeyAndCertificate> MakeTlsCa(const std::string& common_name, absl::Time not_before,
                                            absl::Time not_after, int path_length) {
  LINESIGN_ASSIGN_OR_RETURN(OsslPtr<EVP_PKEY> key, NewKey());
  LINESIGN_ASSIGN_OR_RETURN(OsslPtr<X509> cert, NewCertificate(common_name, key.get(), nullptr, not_before,
                                                               not_after));
  LINESIGN_RETURN_IF_ERROR(AddExtension(cert.get(), cert.get(), NID_basic_constraints,
                                        absl::StrCat("critical,CA:TRUE,pathlen:", path_length)));
  LINESIGN_RETURN_IF_ERROR(AddExtension(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign"));
  LINESIGN_RETURN_IF_ERROR(AddExtension(cert.get(), cert.get(), NID_subject_key_identifier, "hash"));
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) <= 0) return OpenSslFailure("cannot sign the CA certificate");
  return KeyAndCertificate{KeyPem(key.get()), CertPem(cert.get())};
}

absl::StatusOr<KeyAndCertificate> IssueCa(const KeyAndCertificate& parent, const std::string& common_name,
                                          absl::Time not_before, absl::Time not_after) {
  LINESIGN_ASSIGN_OR_RETURN(OsslPtr<X509> parent_cert, ParseOne(parent.certificate_pem));
  LINESIGN_ASSIGN_OR_RETURN(OsslPtr<EVP_PKEY> parent_key, ParseKey(parent.key_pem));
  LINESIGN_ASSIGN_OR_RETURN(OsslPtr<EVP_PKEY> key, NewKey());
  LINESIGN_ASSIGN_OR_RETURN(OsslPtr<X509> cert, NewCertificate(common_name, key.get(), parent_cert.get(),
                                                               not_before, not_after));
  X509* c = cert.get();
  LINESIGN_RETURN_IF_ERROR(AddExtension(c, parent_cert.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0"));
  LINESIGN_RETURN_IF_ERROR(AddExtension(c, parent_cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign"));
  LINESIGN_RETURN_IF_ERROR(AddExtension(c, parent_cert.get(), NID_subject_key_identifier, "hash"));
  LINESIGN_RETURN_IF_ERROR(AddExtension(c, parent_cert.get(), NID_authority_key_identifier, "keyid:always"));
  if (X509_sign(c, parent_key.get(), EVP_sha256()) <= 0) return OpenSslFailure("cannot sign the CA certificate");
  return KeyAndCertificate{KeyPem(key.get()), CertPem(c)};
}

absl::StatusOr<KeyAndCertificate> IssueLeaf(const KeyAndCertificate& ca, const LeafSpec& spec) {
  LINESIGN_ASSIGN_OR_RETURN(OsslPtr<X509> ca_cert, ParseOne(ca.certificate_pem));
  LINESIGN_ASSIGN_OR_RETURN(OsslPtr<EVP_PKEY> ca_key, ParseKey(ca.key_pem));
  LINESIGN_ASSIGN_OR_RETURN(OsslPtr<EVP_PKEY> key, NewKey());
  LINESIGN_ASSIGN_OR_RETURN(OsslPtr<X509> cert, NewCertificate(spec.common_name, key.get(), ca_cert.get(),
                                                               spec.not_before, spec.not_after));
  X509* c = cert.get();
  LINESIGN_RETURN_IF_ERROR(AddExtension(c, ca_cert.get(), NID_basic_constraints, "critical,CA:FALSE"));
  LINESIGN_RETURN_IF_ERROR(AddExtension(c, ca_cert.get(), NID_key_usage, "critical,digitalSignature"));
  if (spec.server && spec.station_credential) {
    return absl::InvalidArgumentError("a station credential is a client certificate, not a server's");
  }
  LINESIGN_RETURN_IF_ERROR(AddExtension(
      c, ca_cert.get(), NID_ext_key_usage,
      spec.server ? "serverAuth"
                  : (spec.station_credential ? absl::StrCat("clientAuth,", auth::kStationEkuOid) : "clientAuth")));
  LINESIGN_RETURN_IF_ERROR(AddExtension(c, ca_cert.get(), NID_authority_key_identifier, "keyid:always"));
  std::vector<std::string> sans;
  for (const auto& d : spec.dns_names) sans.push_back(absl::StrCat("DNS:", d));
  for (const auto& ip : spec.ip_addresses) sans.push_back(absl::StrCat("IP:", ip));
  for (const auto& u : spec.uris) sans.push_back(absl::StrCat("URI:", u));
  if (!sans.empty()) {
    LINESIGN_RETURN_IF_ERROR(AddExtension(c, ca_cert.get(), NID_subject_alt_name, absl::StrJoin(sans, ",")));
  }
  if (X509_sign(c, ca_key.get(), EVP_sha256()) <= 0) return OpenSslFailure("cannot sign the certificate");
  return KeyAndCertificate{KeyPem(key.get()), CertPem(c)};
}

absl::StatusOr<std::string> MakeCrl(const KeyAndCertificate& ca, const std::vector<std::string>& revoked_serials_hex,
                                    absl::Time this_update) {
  LINESIGN_ASSIGN_OR_RETURN(OsslPtr<X509> ca_cert, ParseOne(ca.certificate_pem));
  LINESIGN_ASSIGN_OR_RETURN(OsslPtr<EVP_PKEY> ca_key, ParseKey(ca.key_pem));
  std::unique_ptr<X509_CRL, decltype(&X509_CRL_free)> crl(X509_CRL_new(), X509_CRL_free);
  std::unique_ptr<ASN1_TIME, decltype(&ASN1_TIME_free)> last(ASN1_TIME_new(), ASN1_TIME_free);
  std::unique_ptr<ASN1_TIME, decltype(&ASN1_TIME_free)> next(ASN1_TIME_new(), ASN1_TIME_free);
  ASN1_TIME_set(last.get(), absl::ToTimeT(this_update));
  ASN1_TIME_set(next.get(), absl::ToTimeT(this_update + absl::Hours(24 * 7)));
  if (X509_CRL_set_version(crl.get(), X509_CRL_VERSION_2) != 1 ||
      X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(ca_cert.get())) != 1 ||
      X509_CRL_set1_lastUpdate(crl.get(), last.get()) != 1 || X509_CRL_set1_nextUpdate(crl.get(), next.get()) != 1) {
    return OpenSslFailure("cannot fill the CRL");
  }
  for (const auto& hex : revoked_serials_hex) {
    BIGNUM* raw = nullptr;
    if (BN_hex2bn(&raw, hex.c_str()) == 0) return absl::InvalidArgumentError(absl::StrCat("bad serial ", hex));
    OsslPtr<BIGNUM> bn(raw);
    X509_REVOKED* r = X509_REVOKED_new();
    ASN1_INTEGER* serial = BN_to_ASN1_INTEGER(bn.get(), nullptr);
    X509_REVOKED_set_serialNumber(r, serial);
    X509_REVOKED_set_revocationDate(r, last.get());
    ASN1_INTEGER_free(serial);
    X509_CRL_add0_revoked(crl.get(), r);
  }
  X509_CRL_sort(crl.get());
  if (X509_CRL_sign(crl.get(), ca_key.get(), EVP_sha256()) <= 0) return OpenSslFailure("cannot sign the CRL");
  OsslPtr<BIO> bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509_CRL(bio.get(), crl.get());
  return BioText(bio.get());
}

absl::StatusOr<std::string> SerialHex(const std::string& certificate_pem) {
  LINESIGN_ASSIGN_OR_RETURN(OsslPtr<X509> cert, ParseOne(certificate_pem));
  OsslPtr<BIGNUM> bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert.get()), nullptr));
  char* hex = BN_bn2hex(bn.get());
  std::string out(hex);
  OPENSSL_free(hex);
  return out;
}

absl::Status WriteCredentials(const std::string& dir, const std::string& ca_pem, const KeyAndCertificate& leaf) {
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", strerror(errno)));
  }
  LINESIGN_RETURN_IF_ERROR(WriteFile(absl::StrCat(dir, "/ca.pem"), ca_pem, 0644));
  LINESIGN_RETURN_IF_ERROR(WriteFile(absl::StrCat(dir, "/cert.pem"), leaf.certificate_pem, 0644));
  return WriteFile(absl::StrCat(dir, "/key.pem"), leaf.key_pem, 0600);
}

}  // namespace linesign::tls
