#include "hsm/open_signer.h"

#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/openssl_util.h"
#include "common/status_macros.h"
#include "hsm/pkcs11_signer.h"
#include "hsm/software_signer.h"

namespace linesign::hsm {

absl::StatusOr<std::unique_ptr<Signer>> OpenSigner(const v1::HsmConfig& config, const EVP_PKEY* ca_public_key,
                                                   int sessions) {
  if (!config.development_key_file().empty()) {
    LogWarning("**** DEVELOPMENT KEY: the CA private key is read from ", config.development_key_file(),
               " into process memory. Never use this outside development. ****");
    LINESIGN_ASSIGN_OR_RETURN(auto signer, SoftwareSigner::FromPemFile(config.development_key_file()));
    if (EVP_PKEY_eq(signer->key(), ca_public_key) != 1) {
      return absl::FailedPreconditionError(
          "hsm.development_key_file: the key does not match the CA certificate (ca.chain_file)");
    }
    return std::unique_ptr<Signer>(std::move(signer));
  }
  LINESIGN_ASSIGN_OR_RETURN(Pkcs11Uri uri, ParsePkcs11Uri(config.key_uri()));
  auto pin = config.pin_file().empty() ? LoadPinFromEnv(config.pin_env()) : LoadPinFromFile(config.pin_file());
  if (!pin.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat(config.pin_file().empty() ? "hsm.pin_env: " : "hsm.pin_file: ", pin.status().message()));
  }
  std::map<std::string, std::string> env(config.module_env().begin(), config.module_env().end());
  auto module = Pkcs11Module::Load(config.module(), env);
  if (!module.ok()) return absl::FailedPreconditionError(absl::StrCat("hsm.module: ", module.status().message()));
  auto signer =
      Pkcs11Signer::Create(*std::move(module), uri, *pin, ca_public_key, sessions, config.session_key_copy());
  if (!signer.ok()) {
    const bool copy = absl::StartsWith(signer.status().message(), "hsm.session_key_copy");
    return absl::FailedPreconditionError(
        copy ? std::string(signer.status().message()) : absl::StrCat("hsm.key_uri: ", signer.status().message()));
  }
  return std::unique_ptr<Signer>(*std::move(signer));
}

}  // namespace linesign::hsm
