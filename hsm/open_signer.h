// OpenSigner: the one place that decides how the CA key is reached (PKCS#11 over Cryptoki directly, or the
// development key file). A later move to another access path (e.g. an OpenSSL provider) changes only this file.
#ifndef LINESIGN_HSM_OPEN_SIGNER_H_
#define LINESIGN_HSM_OPEN_SIGNER_H_

#include <memory>

#include "absl/status/statusor.h"
#include "hsm/signer.h"
#include "linesign/v1/config.pb.h"

namespace linesign::hsm {

// OpenSigner opens the key `config` names and checks it matches `ca_public_key` (borrowed for the call).
// `sessions` is the number of concurrent signing threads. Errors are FailedPrecondition and name the config
// field, the token or the key; never the PIN.
absl::StatusOr<std::unique_ptr<Signer>> OpenSigner(const v1::HsmConfig& config, const EVP_PKEY* ca_public_key,
                                                   int sessions);

}  // namespace linesign::hsm

#endif  // LINESIGN_HSM_OPEN_SIGNER_H_
