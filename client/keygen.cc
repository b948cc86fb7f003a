#include "client/keygen.h"

#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509v3.h>

#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace linesign::client {

absl::StatusOr<OsslPtr<EVP_PKEY>> GenerateKey(const std::string& algorithm) {
  EVP_PKEY* key = nullptr;
  if (algorithm == "ec-p256") {
    key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  } else if (algorithm == "ec-p384") {
    key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384");
  } else if (algorithm == "ed25519") {
    key = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  } else if (algorithm == "rsa-2048" || algorithm == "rsa-3072" || algorithm == "rsa-4096") {
    key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(std::stoi(algorithm.substr(4))));
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown key algorithm '", algorithm, "' (ec-p256, ec-p384, ed25519, rsa-2048, rsa-3072, rsa-4096)"));
  }
  if (key == nullptr) return absl::InternalError(absl::StrCat("key generation failed: ", OpenSslErrors()));
  return OsslPtr<EVP_PKEY>(key);
}

absl::StatusOr<std::string> MakeCsr(EVP_PKEY* key, const std::string& subject,
                                    const std::vector<std::string>& sans) {
  OsslPtr<X509_REQ> req(X509_REQ_new());
  X509_REQ_set_version(req.get(), 0);
  X509_NAME* name = X509_REQ_get_subject_name(req.get());
  if (!subject.empty() && subject[0] != '/') {
    return absl::InvalidArgumentError("--subject must look like /CN=device-1/O=Acme");
  }
  for (absl::string_view part : absl::StrSplit(subject, '/', absl::SkipEmpty())) {
    auto eq = part.find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("--subject: '", part, "' is not ATTRIBUTE=value"));
    }
    std::string attr(part.substr(0, eq)), value(part.substr(eq + 1));
    if (X509_NAME_add_entry_by_txt(name, attr.c_str(), MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>(value.data()),
                                   static_cast<int>(value.size()), -1, 0) != 1) {
      OpenSslErrors();
      return absl::InvalidArgumentError(absl::StrCat("--subject: unknown attribute '", attr, "'"));
    }
  }
  if (!sans.empty()) {
    std::string value = absl::StrJoin(sans, ",");
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, nullptr, NID_subject_alt_name, value.c_str());
    if (ext == nullptr) {
      OpenSslErrors();
      return absl::InvalidArgumentError(absl::StrCat("--san: cannot parse '", value, "'"));
    }
    STACK_OF(X509_EXTENSION)* exts = sk_X509_EXTENSION_new_null();
    sk_X509_EXTENSION_push(exts, ext);
    X509_REQ_add_extensions(req.get(), exts);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  }
  X509_REQ_set_pubkey(req.get(), key);
  const EVP_MD* md = EVP_PKEY_get_base_id(key) == EVP_PKEY_ED25519 ? nullptr : EVP_sha256();
  if (X509_REQ_sign(req.get(), key, md) <= 0) {
    return absl::InternalError(absl::StrCat("CSR signature failed: ", OpenSslErrors()));
  }
  std::string der = ToDer(i2d_X509_REQ, static_cast<const X509_REQ*>(req.get()));
  if (der.empty()) return absl::InternalError("cannot encode CSR");
  return der;
}

std::string PrivateKeyPem(EVP_PKEY* key) {
  OsslPtr<BIO> bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, n);
}

absl::StatusOr<std::string> EncryptedPrivateKeyPem(EVP_PKEY* key, const std::string& passphrase) {
  if (passphrase.empty()) return absl::InvalidArgumentError("the passphrase is empty");
  std::unique_ptr<PKCS8_PRIV_KEY_INFO, decltype(&PKCS8_PRIV_KEY_INFO_free)> info(EVP_PKEY2PKCS8(key),
                                                                                 PKCS8_PRIV_KEY_INFO_free);
  if (info == nullptr) return absl::InternalError(absl::StrCat("cannot encode the key: ", OpenSslErrors()));
  // nid -1 with a cipher: PBES2; the PRF defaults to HMAC-SHA256; salt NULL: 16 random bytes.
  std::unique_ptr<X509_SIG, decltype(&X509_SIG_free)> encrypted(
      PKCS8_encrypt(-1, EVP_aes_256_cbc(), passphrase.data(), static_cast<int>(passphrase.size()), nullptr, 0,
                    kPassphraseIterations, info.get()),
      X509_SIG_free);
  if (encrypted == nullptr) return absl::InternalError(absl::StrCat("cannot encrypt the key: ", OpenSslErrors()));
  OsslPtr<BIO> bio(BIO_new(BIO_s_mem()));
  if (PEM_write_bio_PKCS8(bio.get(), encrypted.get()) != 1) {
    return absl::InternalError(absl::StrCat("cannot write the key: ", OpenSslErrors()));
  }
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, n);
}

absl::StatusOr<std::string> ReadPassphraseFile(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return absl::InvalidArgumentError(absl::StrCat("--passphrase-file: ", text.status().message()));
  std::string line = text->substr(0, text->find('\n'));
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--passphrase-file ", path, ": the first line (the passphrase) is empty"));
  }
  return line;
}

}  // namespace linesign::client
