#include "hsm/software_signer.h"

#include <openssl/pem.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace linesign::hsm {

absl::StatusOr<std::unique_ptr<SoftwareSigner>> SoftwareSigner::FromPemFile(const std::string& path) {
  LINESIGN_ASSIGN_OR_RETURN(std::string pem, ReadFile(path));
  OsslPtr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  OsslPtr<EVP_PKEY> key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  OPENSSL_cleanse(pem.data(), pem.size());
  if (key == nullptr) {
    OpenSslErrors();
    return absl::FailedPreconditionError(absl::StrCat(path, ": not an unencrypted PEM private key"));
  }
  return FromKey(std::move(key), absl::StrCat("DEVELOPMENT key file ", path));
}

absl::StatusOr<std::unique_ptr<SoftwareSigner>> SoftwareSigner::FromKey(OsslPtr<EVP_PKEY> key,
                                                                        std::string description) {
  LINESIGN_ASSIGN_OR_RETURN(SignatureAlgorithm alg, AlgorithmForKey(key.get()));
  return std::unique_ptr<SoftwareSigner>(new SoftwareSigner(std::move(key), alg, std::move(description)));
}

absl::StatusOr<std::string> SoftwareSigner::Sign(absl::string_view message) const {
  OsslPtr<EVP_MD_CTX> ctx(EVP_MD_CTX_new());
  size_t len = 0;
  if (EVP_DigestSignInit(ctx.get(), nullptr, DigestFor(algorithm_), nullptr, key_.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(message.data()),
                     message.size()) != 1) {
    return absl::InternalError(absl::StrCat("software signature failed: ", OpenSslErrors()));
  }
  std::string sig(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1) {
    return absl::InternalError(absl::StrCat("software signature failed: ", OpenSslErrors()));
  }
  sig.resize(len);
  return sig;
}

}  // namespace linesign::hsm
