#include "server/iot/verification_certificate.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include <future>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/openssl_util.h"
#include "server/config/config.h"

namespace linesign::iot {

absl::StatusOr<std::shared_ptr<const profile::Profile>> VerificationProfile() {
  static const auto* compiled = [] {
    v1::ServerConfig config;
    v1::Profile& p = (*config.mutable_profiles())[kVerificationProfileName];
    p.set_validity_days(1);
    p.add_key_types("ec-p256");
    p.add_subject_attributes("CN");
    config::ApplyDefaults(&config);
    return new absl::StatusOr<std::shared_ptr<const profile::Profile>>(
        profile::Profile::Compile(kVerificationProfileName, config.profiles().at(kVerificationProfileName)));
  }();
  return *compiled;
}

absl::StatusOr<IssuedCertificate> IssueVerificationCertificate(issuance::BatchSigner& signer, const std::string& code,
                                                               const std::string& identity) {
  bool hex = !code.empty() && code.size() <= 64;
  for (char c : code) hex = hex && absl::ascii_isxdigit(c);
  if (!hex) {
    return absl::InvalidArgumentError(absl::StrCat("registration code '", absl::CHexEscape(code.substr(0, 80)),
                                                   "' is not 1 to 64 hexadecimal digits"));
  }
  absl::StatusOr<std::shared_ptr<const profile::Profile>> profile = VerificationProfile();
  if (!profile.ok()) return profile.status();
  OsslPtr<EVP_PKEY> key(EVP_EC_gen("P-256"));
  if (key == nullptr) return absl::InternalError(absl::StrCat("P-256 key generation failed: ", OpenSslErrors()));
  std::unique_ptr<X509_NAME, decltype(&X509_NAME_free)> name(X509_NAME_new(), X509_NAME_free);
  X509_NAME_add_entry_by_txt(name.get(), "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(code.data()),
                             static_cast<int>(code.size()), -1, 0);
  unsigned char nonce[8];
  RAND_bytes(nonce, sizeof(nonce));

  issuance::IssuanceRequest r;
  r.reason = issuance::IssuanceRequest::Reason::kCaVerification;
  r.subject_der = ToDer(i2d_X509_NAME, static_cast<const X509_NAME*>(name.get()));
  r.subject_text = absl::StrCat("CN=", code);
  r.spki_der = PublicKeyDer(key.get());
  r.profile = *profile;
  // A new request id per attempt: a repeated attempt (after AWS refused the last one) gets a new certificate for
  // a new key rather than ALREADY_EXISTS for the old id.
  r.requester = {issuance::IssuanceRequest::Requester::Kind::kAdministrator, identity,
                 absl::StrCat("iot-verify:", code.substr(0, 16), ":",
                              absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(nonce), 8)))};
  auto promise = std::make_shared<std::promise<absl::StatusOr<store::CertificateRecord>>>();
  std::future<absl::StatusOr<store::CertificateRecord>> future = promise->get_future();
  absl::Status submitted = signer.Submit(issuance::SignJob{
      std::move(r), [promise](absl::StatusOr<store::CertificateRecord> record, bool) {
        promise->set_value(std::move(record));
      }});
  if (!submitted.ok()) return submitted;
  absl::StatusOr<store::CertificateRecord> record = future.get();
  if (!record.ok()) return record.status();
  return IssuedCertificate{.der = record->der, .serial_hex = record->serial_hex};
}

}  // namespace linesign::iot
