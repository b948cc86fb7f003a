// Pkcs11Signer: a Signer whose private key stays inside a PKCS#11 token.
#ifndef LINESIGN_HSM_PKCS11_SIGNER_H_
#define LINESIGN_HSM_PKCS11_SIGNER_H_

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <vector>

#include "hsm/pin.h"
#include "hsm/pkcs11_module.h"
#include "hsm/pkcs11_uri.h"
#include "hsm/signer.h"

namespace linesign::hsm {

class Pkcs11Signer final : public Signer {
 public:
  // Create finds the one token and the one private key `uri` names, logs in with `pin`, and checks by a test
  // signature that the key belongs to `ca_public_key` (the issuing CA certificate's key; borrowed for the call).
  // `max_sessions` bounds the session pool (one per signing thread). With `session_key_copy` every session signs
  // with its own session-object copy of the key (C_CopyObject with CKA_TOKEN false), used only if the copy reads
  // back CKA_SENSITIVE true, CKA_EXTRACTABLE false and CKA_PRIVATE true; a module that refuses the copy or makes
  // a weaker one fails Create (FailedPrecondition naming hsm.session_key_copy), never falls back silently.
  // Errors name the token, key or PKCS#11 return value (FailedPrecondition: fix the configuration or the token),
  // never the PIN.
  static absl::StatusOr<std::unique_ptr<Pkcs11Signer>> Create(std::shared_ptr<Pkcs11Module> module,
                                                               const Pkcs11Uri& uri, const Pin& pin,
                                                               const EVP_PKEY* ca_public_key, int max_sessions,
                                                               bool session_key_copy = false);
  ~Pkcs11Signer() override;

  // Sign hashes `message` in-process and signs the digest on the token (CKM_ECDSA, or CKM_RSA_PKCS over a
  // DigestInfo). A session the module reports closed or invalid is dropped with every idle one and the signature
  // retried on a fresh session; a lost login or key handle (all sessions closed, token re-inserted, HSM failed
  // over) is recovered by finding the token, logging in again with the PIN and finding the key again.
  absl::StatusOr<std::string> Sign(absl::string_view message) const override;
  SignatureAlgorithm algorithm() const override { return algorithm_; }
  std::string description() const override { return description_; }

  // open_sessions returns how many sessions the pool holds (idle or in use).
  int open_sessions() const;

 private:
  Pkcs11Signer(std::shared_ptr<Pkcs11Module> module, CK_SLOT_ID slot, CK_OBJECT_HANDLE key,
               SignatureAlgorithm algorithm, const Pkcs11Uri& uri, const Pin& pin, int max_sessions,
               bool session_key_copy)
      : module_(std::move(module)), slot_(slot), key_(key), algorithm_(algorithm), description_(uri.ToString()),
        uri_(uri), pin_(pin.value()), max_sessions_(max_sessions), session_key_copy_(session_key_copy) {}

  // Session is one pooled session and the key it signs with: its own session-object copy
  // (session_key_copy), or CK_INVALID_HANDLE for the token key (key_).
  struct Session {
    CK_SESSION_HANDLE handle;
    CK_OBJECT_HANDLE key_copy;
  };
  // Acquire returns an idle session or opens one (with its key copy); `rv` receives the PKCS#11 result of the
  // call that failed.
  absl::StatusOr<Session> Acquire(CK_RV* rv) const;
  void Release(Session session, bool broken) const;
  // CopyKey makes `session`'s copy of the key and checks it (see Create).
  absl::StatusOr<CK_OBJECT_HANDLE> CopyKey(CK_SESSION_HANDLE session, CK_RV* rv) const;
  // DropIdleSessions closes every idle session of the pool.
  void DropIdleSessions() const;
  // Relogin finds the token again, logs in on a new login session and finds the key again.
  absl::Status Relogin() const;
  // SignDigestOnce signs on `session`; `rv` receives the PKCS#11 result of the call that failed.
  absl::StatusOr<std::string> SignDigestOnce(const Session& session, absl::string_view data, CK_RV* rv) const;

  std::shared_ptr<Pkcs11Module> module_;
  mutable std::atomic<CK_SLOT_ID> slot_;
  // Token object handles are valid in every session of the application, until the token goes away.
  mutable std::atomic<CK_OBJECT_HANDLE> key_;
  SignatureAlgorithm algorithm_;
  std::string description_;
  const Pkcs11Uri uri_;
  const Pin pin_;  // kept for logging in again; wiped on destruction, never printed
  int max_sessions_;
  const bool session_key_copy_;

  // A session never used for signing: it holds the login, which PKCS#11 ends when an application's last session
  // closes (a dropped signing session must not log the others out).
  mutable std::mutex recover_mu_;
  mutable CK_SESSION_HANDLE login_session_ = CK_INVALID_HANDLE;  // guarded by recover_mu_
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  mutable std::vector<Session> idle_;  // guarded by mu_
  mutable int open_ = 0;                         // guarded by mu_
};

}  // namespace linesign::hsm

#endif  // LINESIGN_HSM_PKCS11_SIGNER_H_
