#include "hsm/pkcs11_signer.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/openssl_util.h"
#include "common/status_macros.h"

namespace linesign::hsm {
namespace {

std::string Padded(const CK_UTF8CHAR* field, size_t n) {
  std::string s(reinterpret_cast<const char*>(field), n);
  return std::string(absl::StripTrailingAsciiWhitespace(s));
}

// DigestInfo prefix for SHA-256 (RFC 8017 §9.2 note 1).
constexpr unsigned char kSha256DigestInfo[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                               0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};

absl::StatusOr<CK_SLOT_ID> FindSlot(CK_FUNCTION_LIST_PTR f, const Pkcs11Uri& uri) {
  CK_ULONG count = 0;
  CK_RV rv = f->C_GetSlotList(CK_TRUE, nullptr, &count);
  if (rv != CKR_OK) return Pkcs11Error("C_GetSlotList", rv);
  std::vector<CK_SLOT_ID> slots(count);
  rv = f->C_GetSlotList(CK_TRUE, slots.data(), &count);
  if (rv != CKR_OK) return Pkcs11Error("C_GetSlotList", rv);
  slots.resize(count);
  std::vector<CK_SLOT_ID> matches;
  std::vector<std::string> seen;
  for (CK_SLOT_ID slot : slots) {
    CK_TOKEN_INFO info;
    if (f->C_GetTokenInfo(slot, &info) != CKR_OK) continue;
    std::string label = Padded(info.label, sizeof(info.label));
    seen.push_back(absl::StrCat("'", label, "'"));
    if (uri.slot_id.has_value() && *uri.slot_id != slot) continue;
    if (uri.token.has_value() && *uri.token != label) continue;
    if (uri.manufacturer.has_value() && *uri.manufacturer != Padded(info.manufacturerID, sizeof(info.manufacturerID)))
      continue;
    if (uri.serial.has_value() && *uri.serial != Padded(info.serialNumber, sizeof(info.serialNumber))) continue;
    if (uri.model.has_value() && *uri.model != Padded(info.model, sizeof(info.model))) continue;
    if ((info.flags & CKF_TOKEN_INITIALIZED) == 0) continue;
    matches.push_back(slot);
  }
  if (matches.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("no initialised token matches ", uri.ToString(),
                                                      "; tokens present: ",
                                                      seen.empty() ? "none" : absl::StrJoin(seen, ", ")));
  }
  if (matches.size() > 1) {
    return absl::FailedPreconditionError(
        absl::StrCat(matches.size(), " tokens match ", uri.ToString(), "; add serial= to the URI"));
  }
  return matches[0];
}

absl::StatusOr<CK_OBJECT_HANDLE> FindPrivateKey(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE session,
                                                const Pkcs11Uri& uri) {
  CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
  // Token objects only: the sessions' own copies of the key (hsm.session_key_copy) carry the same label and id.
  CK_BBOOL on_token = CK_TRUE;
  std::vector<CK_ATTRIBUTE> tmpl;
  tmpl.push_back({CKA_CLASS, &cls, sizeof(cls)});
  tmpl.push_back({CKA_TOKEN, &on_token, sizeof(on_token)});
  std::string label = uri.object.value_or(""), id = uri.id.value_or("");
  if (uri.object.has_value()) tmpl.push_back({CKA_LABEL, label.data(), label.size()});
  if (uri.id.has_value()) tmpl.push_back({CKA_ID, id.data(), id.size()});
  CK_RV rv = f->C_FindObjectsInit(session, tmpl.data(), tmpl.size());
  if (rv != CKR_OK) return Pkcs11Error("C_FindObjectsInit", rv);
  CK_OBJECT_HANDLE found[2];
  CK_ULONG n = 0;
  rv = f->C_FindObjects(session, found, 2, &n);
  f->C_FindObjectsFinal(session);
  if (rv != CKR_OK) return Pkcs11Error("C_FindObjects", rv);
  if (n == 0) {
    return absl::FailedPreconditionError(absl::StrCat("no private key on the token matches ", uri.ToString()));
  }
  if (n > 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("more than one private key matches ", uri.ToString(), "; add id= to the URI"));
  }
  return found[0];
}

// LoginSession opens a session on `slot` and logs the application in (already logged in is fine). The error
// names the token and the PKCS#11 reason, never the PIN.
absl::StatusOr<CK_SESSION_HANDLE> LoginSession(CK_FUNCTION_LIST_PTR f, CK_SLOT_ID slot, const Pkcs11Uri& uri,
                                               const Pin& pin) {
  CK_SESSION_HANDLE session;
  CK_RV rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION, nullptr, nullptr, &session);
  if (rv != CKR_OK) return Pkcs11Error("C_OpenSession", rv);
  rv = f->C_Login(session, CKU_USER, reinterpret_cast<CK_UTF8CHAR_PTR>(const_cast<char*>(pin.value().data())),
                  pin.value().size());
  if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
    f->C_CloseSession(session);
    return absl::FailedPreconditionError(absl::StrCat("login to token ", uri.token.value_or("(unnamed)"),
                                                      " failed: ", CkrName(rv),
                                                      rv == CKR_PIN_INCORRECT ? " (wrong PIN)" : ""));
  }
  return session;
}

// LostLogin: the call failed because the application's login or the key handle is gone (every session was
// closed, the token re-inserted, the HSM failed over): logging in again and finding the key again recovers it.
bool LostLogin(CK_RV rv) {
  return rv == CKR_USER_NOT_LOGGED_IN || rv == CKR_KEY_HANDLE_INVALID || rv == CKR_OBJECT_HANDLE_INVALID;
}

// LostSession: the call failed because its session is gone (closed by the module, the device removed or failed
// over): another session may work.
bool LostSession(CK_RV rv) {
  return rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED || rv == CKR_DEVICE_REMOVED ||
         rv == CKR_TOKEN_NOT_PRESENT;
}

// TokenKey is a token's key as found after logging in; `session` holds the login.
struct TokenKey {
  CK_SLOT_ID slot;
  CK_SESSION_HANDLE session;
  CK_OBJECT_HANDLE key;
};

// OpenTokenKey finds the one token `uri` names, logs in on a new session and finds the one private key it names.
absl::StatusOr<TokenKey> OpenTokenKey(CK_FUNCTION_LIST_PTR f, const Pkcs11Uri& uri, const Pin& pin) {
  LINESIGN_ASSIGN_OR_RETURN(CK_SLOT_ID slot, FindSlot(f, uri));
  LINESIGN_ASSIGN_OR_RETURN(CK_SESSION_HANDLE session, LoginSession(f, slot, uri, pin));
  auto key = FindPrivateKey(f, session, uri);
  if (!key.ok()) {
    f->C_CloseSession(session);
    return key.status();
  }
  return TokenKey{slot, session, *key};
}

}  // namespace

absl::StatusOr<std::unique_ptr<Pkcs11Signer>> Pkcs11Signer::Create(std::shared_ptr<Pkcs11Module> module,
                                                                    const Pkcs11Uri& uri, const Pin& pin,
                                                                    const EVP_PKEY* ca_public_key,
                                                                    int max_sessions, bool session_key_copy) {
  CK_FUNCTION_LIST_PTR f = module->functions();
  LINESIGN_ASSIGN_OR_RETURN(SignatureAlgorithm algorithm, AlgorithmForKey(ca_public_key));
  LINESIGN_ASSIGN_OR_RETURN(TokenKey found, OpenTokenKey(f, uri, pin));
  CK_SESSION_HANDLE session = found.session;
  CK_KEY_TYPE key_type = 0;
  CK_ATTRIBUTE attr = {CKA_KEY_TYPE, &key_type, sizeof(key_type)};
  CK_RV rv = f->C_GetAttributeValue(session, found.key, &attr, 1);
  if (rv != CKR_OK) {
    f->C_CloseSession(session);
    return Pkcs11Error("C_GetAttributeValue(CKA_KEY_TYPE)", rv);
  }
  bool want_ec = algorithm != SignatureAlgorithm::kRsaPkcs1Sha256;
  if ((want_ec && key_type != CKK_EC) || (!want_ec && key_type != CKK_RSA)) {
    f->C_CloseSession(session);
    return absl::FailedPreconditionError(absl::StrCat("the key ", uri.ToString(),
                                                      " is not of the CA certificate's key type (",
                                                      AlgorithmName(algorithm), ")"));
  }
  std::unique_ptr<Pkcs11Signer> signer(
      new Pkcs11Signer(std::move(module), found.slot, found.key, algorithm, uri, pin, std::max(1, max_sessions),
                       session_key_copy));
  signer->login_session_ = session;

  // The key must be the CA certificate's: sign a random challenge and verify it with the certificate's key. (With
  // session_key_copy this signs with a checked copy: a module that cannot make one stops here.)
  unsigned char challenge[32];
  RAND_bytes(challenge, sizeof(challenge));
  absl::string_view msg(reinterpret_cast<char*>(challenge), sizeof(challenge));
  LINESIGN_ASSIGN_OR_RETURN(std::string sig, signer->Sign(msg));
  OsslPtr<EVP_MD_CTX> ctx(EVP_MD_CTX_new());
  if (EVP_DigestVerifyInit(ctx.get(), nullptr, DigestFor(algorithm), nullptr,
                           const_cast<EVP_PKEY*>(ca_public_key)) != 1 ||
      EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(), challenge,
                       sizeof(challenge)) != 1) {
    OpenSslErrors();
    return absl::FailedPreconditionError(absl::StrCat(
        "the key ", uri.ToString(), " does not match the public key of the CA certificate (ca.chain_file)"));
  }
  return signer;
}

Pkcs11Signer::~Pkcs11Signer() {
  std::lock_guard<std::mutex> recover_lock(recover_mu_);
  std::lock_guard<std::mutex> lock(mu_);
  for (const Session& s : idle_) module_->functions()->C_CloseSession(s.handle);  // its key copy goes with it
  if (login_session_ != CK_INVALID_HANDLE) module_->functions()->C_CloseSession(login_session_);
}

int Pkcs11Signer::open_sessions() const {
  std::lock_guard<std::mutex> lock(mu_);
  return open_;
}

absl::StatusOr<CK_OBJECT_HANDLE> Pkcs11Signer::CopyKey(CK_SESSION_HANDLE session, CK_RV* rv_out) const {
  CK_FUNCTION_LIST_PTR f = module_->functions();
  CK_BBOOL no = CK_FALSE;
  CK_ATTRIBUTE copy_template[] = {{CKA_TOKEN, &no, sizeof(no)}};
  CK_OBJECT_HANDLE copy = CK_INVALID_HANDLE;
  CK_RV rv = *rv_out = f->C_CopyObject(session, key_.load(std::memory_order_acquire), copy_template, 1, &copy);
  if (rv != CKR_OK) {
    absl::Status st = Pkcs11Error("C_CopyObject", rv);
    // The device, or a login or key handle lost with the sessions (recovered by logging in again), not the
    // module's policy.
    if (st.code() == absl::StatusCode::kUnavailable || LostLogin(rv)) return absl::UnavailableError(st.message());
    return absl::FailedPreconditionError(absl::StrCat(
        "hsm.session_key_copy: the module did not copy the key ", description_, " into a session object (",
        st.message(), "); turn hsm.session_key_copy off for this module"));
  }
  CK_BBOOL sensitive = CK_FALSE, extractable = CK_TRUE, is_private = CK_FALSE;
  CK_ATTRIBUTE check[] = {{CKA_SENSITIVE, &sensitive, sizeof(sensitive)},
                          {CKA_EXTRACTABLE, &extractable, sizeof(extractable)},
                          {CKA_PRIVATE, &is_private, sizeof(is_private)}};
  rv = *rv_out = f->C_GetAttributeValue(session, copy, check, 3);
  if (rv != CKR_OK || sensitive != CK_TRUE || extractable != CK_FALSE || is_private != CK_TRUE) {
    f->C_DestroyObject(session, copy);
    if (rv != CKR_OK && Pkcs11Error("", rv).code() == absl::StatusCode::kUnavailable) {
      return Pkcs11Error("C_GetAttributeValue(session key copy)", rv);
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "hsm.session_key_copy: refusing the session copy of the key ", description_, ": it must be CKA_SENSITIVE "
        "true, CKA_EXTRACTABLE false and CKA_PRIVATE true, the module gave ",
        rv != CKR_OK ? absl::StrCat("no answer (C_GetAttributeValue: ", CkrName(rv), ")")
                     : absl::StrCat("CKA_SENSITIVE ", sensitive == CK_TRUE ? "true" : "false", ", CKA_EXTRACTABLE ",
                                    extractable == CK_TRUE ? "true" : "false", ", CKA_PRIVATE ",
                                    is_private == CK_TRUE ? "true" : "false"),
        "; turn hsm.session_key_copy off for this module"));
  }
  return copy;
}

absl::StatusOr<Pkcs11Signer::Session> Pkcs11Signer::Acquire(CK_RV* rv_out) const {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    if (!idle_.empty()) {
      Session s = idle_.back();
      idle_.pop_back();
      return s;
    }
    if (open_ < max_sessions_) {
      ++open_;
      lock.unlock();
      CK_FUNCTION_LIST_PTR f = module_->functions();
      Session s{CK_INVALID_HANDLE, CK_INVALID_HANDLE};
      absl::Status failed;
      if (CK_RV rv = *rv_out = f->C_OpenSession(slot_.load(std::memory_order_acquire), CKF_SERIAL_SESSION,
                                                nullptr, nullptr, &s.handle);
          rv != CKR_OK) {
        failed = Pkcs11Error("C_OpenSession", rv);
      } else if (session_key_copy_) {
        auto copy = CopyKey(s.handle, rv_out);
        if (copy.ok()) {
          s.key_copy = *copy;
        } else {
          f->C_CloseSession(s.handle);
          failed = copy.status();
        }
      }
      if (!failed.ok()) {
        lock.lock();
        --open_;
        cv_.notify_one();
        return failed;
      }
      return s;
    }
    cv_.wait(lock);
  }
}

void Pkcs11Signer::Release(Session session, bool broken) const {
  if (broken) module_->functions()->C_CloseSession(session.handle);
  std::lock_guard<std::mutex> lock(mu_);
  if (broken) {
    --open_;
  } else {
    idle_.push_back(session);
  }
  cv_.notify_one();
}

absl::StatusOr<std::string> Pkcs11Signer::SignDigestOnce(const Session& s, absl::string_view data,
                                                         CK_RV* rv_out) const {
  CK_FUNCTION_LIST_PTR f = module_->functions();
  CK_SESSION_HANDLE session = s.handle;
  CK_MECHANISM mech = {algorithm_ == SignatureAlgorithm::kRsaPkcs1Sha256 ? CKM_RSA_PKCS : CKM_ECDSA, nullptr, 0};
  CK_OBJECT_HANDLE key = s.key_copy != CK_INVALID_HANDLE ? s.key_copy : key_.load(std::memory_order_acquire);
  CK_RV rv = *rv_out = f->C_SignInit(session, &mech, key);
  if (rv != CKR_OK) return Pkcs11Error("C_SignInit", rv);
  unsigned char sig[512];
  CK_ULONG sig_len = sizeof(sig);
  rv = *rv_out = f->C_Sign(session, reinterpret_cast<CK_BYTE_PTR>(const_cast<char*>(data.data())), data.size(),
                           sig, &sig_len);
  if (rv != CKR_OK) return Pkcs11Error("C_Sign", rv);
  std::string raw(reinterpret_cast<char*>(sig), sig_len);
  if (algorithm_ == SignatureAlgorithm::kRsaPkcs1Sha256) return raw;
  return EcdsaRawToDer(raw);
}

void Pkcs11Signer::DropIdleSessions() const {
  std::vector<Session> idle;
  {
    std::lock_guard<std::mutex> lock(mu_);
    idle.swap(idle_);
    open_ -= static_cast<int>(idle.size());
    cv_.notify_all();
  }
  for (const Session& s : idle) module_->functions()->C_CloseSession(s.handle);  // most are gone already
}

absl::Status Pkcs11Signer::Relogin() const {
  std::lock_guard<std::mutex> lock(recover_mu_);
  CK_FUNCTION_LIST_PTR f = module_->functions();
  // The token may be back in another slot (re-inserted, or a network HSM that failed over). With key copies, a
  // C_CopyObject cut short by the fail-over can leave, for a moment, a second object the module reports as the
  // key until the session that made it is gone: a second match is looked for again, briefly, before it is final.
  absl::StatusOr<TokenKey> opened = OpenTokenKey(f, uri_, pin_);
  for (int retry = 0; session_key_copy_ && retry < 20 && !opened.ok() &&
                      absl::StrContains(opened.status().message(), "more than one private key");
       ++retry) {
    absl::SleepFor(absl::Milliseconds(50));
    opened = OpenTokenKey(f, uri_, pin_);
  }
  LINESIGN_RETURN_IF_ERROR(opened.status());
  TokenKey found = *std::move(opened);
  slot_.store(found.slot, std::memory_order_release);
  key_.store(found.key, std::memory_order_release);
  CK_SESSION_HANDLE old = login_session_;
  login_session_ = found.session;
  if (old != CK_INVALID_HANDLE) f->C_CloseSession(old);  // usually gone with the others
  return absl::OkStatus();
}

absl::StatusOr<std::string> Pkcs11Signer::Sign(absl::string_view message) const {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (EVP_Digest(message.data(), message.size(), digest, &digest_len, DigestFor(algorithm_), nullptr) != 1) {
    return absl::InternalError(absl::StrCat("digest failed: ", OpenSslErrors()));
  }
  std::string data;
  if (algorithm_ == SignatureAlgorithm::kRsaPkcs1Sha256) {
    data.assign(reinterpret_cast<const char*>(kSha256DigestInfo), sizeof(kSha256DigestInfo));
  }
  data.append(reinterpret_cast<char*>(digest), digest_len);

  // A lost session is replaced (and the idle ones dropped: a module that closes one usually closed them all); a
  // lost login or key handle (every session was closed, the token was re-inserted or failed over) is recovered by
  // logging in again and finding the key again. Each is tried once; anything else is returned as it is.
  absl::Status last;
  bool dropped = false, relogged = false;
  for (int attempt = 0; attempt < 3; ++attempt) {
    CK_RV rv = CKR_OK;
    auto acquired = Acquire(&rv);
    if (!acquired.ok()) {
      // A new session's key copy fails when the login went with the old sessions (log in again once), or when the
      // new session itself was lost between its opening and the copy, in a fail-over (open another, once).
      last = acquired.status();
      if (LostSession(rv) && !dropped) {
        dropped = true;
        DropIdleSessions();
        continue;
      }
      if ((!LostLogin(rv) && !LostSession(rv)) || relogged) return acquired.status();
      relogged = true;
      if (absl::Status st = Relogin(); !st.ok()) {
        return absl::UnavailableError(absl::StrCat(last.message(), "; logging in again failed: ", st.message()));
      }
      continue;
    }
    Session session = *acquired;
    auto sig = SignDigestOnce(session, data, &rv);
    if (sig.ok()) {
      Release(session, false);
      return sig;
    }
    last = sig.status();
    bool lost_session = LostSession(rv);
    bool lost_login = LostLogin(rv);
    // A session's key copy belongs to the login it was made under: after a lost login it is made again.
    Release(session, lost_session || (session_key_copy_ && lost_login));
    if (lost_session && !dropped) {
      dropped = true;
      DropIdleSessions();
    } else if ((lost_login || lost_session) && !relogged) {
      relogged = true;
      if (absl::Status st = Relogin(); !st.ok()) {
        return absl::UnavailableError(absl::StrCat(last.message(), "; logging in again failed: ", st.message()));
      }
    } else {
      break;
    }
  }
  return last;
}

}  // namespace linesign::hsm
