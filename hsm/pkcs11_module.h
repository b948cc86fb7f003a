// Pkcs11Module: one loaded and initialised PKCS#11 module (Cryptoki library).
//
// The module's CK_FUNCTION_LIST is the seam between linesign and the HSM: only the C_* calls it lists are used,
// and tests can wrap a real module's list to inject failures (see hsm/testing/).
#ifndef LINESIGN_HSM_PKCS11_MODULE_H_
#define LINESIGN_HSM_PKCS11_MODULE_H_

#include <p11-kit/pkcs11.h>

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace linesign::hsm {

// CkrName returns the symbolic name of a PKCS#11 return value ("CKR_PIN_INCORRECT") or its hex value.
std::string CkrName(CK_RV rv);

// Pkcs11Error maps a failed PKCS#11 call to a Status: device and session failures are Unavailable (retry once the
// device is back), everything else Internal. `what` names the call and its object, never a secret.
absl::Status Pkcs11Error(absl::string_view what, CK_RV rv);

class Pkcs11Module {
 public:
  // Load dlopens `path`, sets `env` (e.g. SOFTHSM2_CONF) first, and calls C_Initialize with OS locking. One
  // module object is shared per path inside the process; it is finalised when the last user releases it.
  static absl::StatusOr<std::shared_ptr<Pkcs11Module>> Load(const std::string& path,
                                                            const std::map<std::string, std::string>& env);

  // ForFunctionList wraps an already initialised function list (tests); `functions` is borrowed and must outlive
  // the module object. Nothing is finalised on destruction.
  static std::shared_ptr<Pkcs11Module> ForFunctionList(CK_FUNCTION_LIST_PTR functions, std::string name);

  ~Pkcs11Module();
  Pkcs11Module(const Pkcs11Module&) = delete;
  Pkcs11Module& operator=(const Pkcs11Module&) = delete;

  CK_FUNCTION_LIST_PTR functions() const { return functions_; }
  const std::string& name() const { return name_; }

 private:
  Pkcs11Module(void* handle, CK_FUNCTION_LIST_PTR functions, std::string name, bool finalize)
      : handle_(handle), functions_(functions), name_(std::move(name)), finalize_(finalize) {}

  void* handle_;                    // dlopen handle, owned (nullptr for a wrapped list)
  CK_FUNCTION_LIST_PTR functions_;  // owned by the module library
  std::string name_;
  bool finalize_;
};

}  // namespace linesign::hsm

#endif  // LINESIGN_HSM_PKCS11_MODULE_H_
