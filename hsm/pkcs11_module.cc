#include "hsm/pkcs11_module.h"

#include <dlfcn.h>
#include <stdlib.h>

#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace linesign::hsm {

std::string CkrName(CK_RV rv) {
  switch (rv) {
#define LINESIGN_CKR(x) \
  case x:               \
    return #x;
    LINESIGN_CKR(CKR_OK)
    LINESIGN_CKR(CKR_HOST_MEMORY)
    LINESIGN_CKR(CKR_SLOT_ID_INVALID)
    LINESIGN_CKR(CKR_GENERAL_ERROR)
    LINESIGN_CKR(CKR_FUNCTION_FAILED)
    LINESIGN_CKR(CKR_ARGUMENTS_BAD)
    LINESIGN_CKR(CKR_ACTION_PROHIBITED)
    LINESIGN_CKR(CKR_ATTRIBUTE_READ_ONLY)
    LINESIGN_CKR(CKR_TEMPLATE_INCONSISTENT)
    LINESIGN_CKR(CKR_ATTRIBUTE_TYPE_INVALID)
    LINESIGN_CKR(CKR_ATTRIBUTE_SENSITIVE)
    LINESIGN_CKR(CKR_DEVICE_ERROR)
    LINESIGN_CKR(CKR_DEVICE_MEMORY)
    LINESIGN_CKR(CKR_DEVICE_REMOVED)
    LINESIGN_CKR(CKR_KEY_HANDLE_INVALID)
    LINESIGN_CKR(CKR_KEY_TYPE_INCONSISTENT)
    LINESIGN_CKR(CKR_MECHANISM_INVALID)
    LINESIGN_CKR(CKR_OBJECT_HANDLE_INVALID)
    LINESIGN_CKR(CKR_OPERATION_ACTIVE)
    LINESIGN_CKR(CKR_PIN_INCORRECT)
    LINESIGN_CKR(CKR_PIN_LOCKED)
    LINESIGN_CKR(CKR_SESSION_CLOSED)
    LINESIGN_CKR(CKR_SESSION_COUNT)
    LINESIGN_CKR(CKR_SESSION_HANDLE_INVALID)
    LINESIGN_CKR(CKR_TOKEN_NOT_PRESENT)
    LINESIGN_CKR(CKR_TOKEN_NOT_RECOGNIZED)
    LINESIGN_CKR(CKR_USER_NOT_LOGGED_IN)
    LINESIGN_CKR(CKR_USER_ALREADY_LOGGED_IN)
    LINESIGN_CKR(CKR_USER_PIN_NOT_INITIALIZED)
    LINESIGN_CKR(CKR_CRYPTOKI_NOT_INITIALIZED)
    LINESIGN_CKR(CKR_CRYPTOKI_ALREADY_INITIALIZED)
    LINESIGN_CKR(CKR_BUFFER_TOO_SMALL)
#undef LINESIGN_CKR
    default:
      return absl::StrFormat("CKR_0x%lX", static_cast<unsigned long>(rv));
  }
}

absl::Status Pkcs11Error(absl::string_view what, CK_RV rv) {
  std::string msg = absl::StrCat(what, ": ", CkrName(rv));
  switch (rv) {
    case CKR_DEVICE_ERROR:
    case CKR_DEVICE_MEMORY:
    case CKR_DEVICE_REMOVED:
    case CKR_SESSION_CLOSED:
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_SESSION_COUNT:
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_HOST_MEMORY:
      return absl::UnavailableError(msg);
    default:
      return absl::InternalError(msg);
  }
}

namespace {
std::mutex g_modules_mu;
std::map<std::string, std::weak_ptr<Pkcs11Module>>& Modules() {
  static auto* modules = new std::map<std::string, std::weak_ptr<Pkcs11Module>>();
  return *modules;
}
}  // namespace

absl::StatusOr<std::shared_ptr<Pkcs11Module>> Pkcs11Module::Load(const std::string& path,
                                                                  const std::map<std::string, std::string>& env) {
  std::lock_guard<std::mutex> lock(g_modules_mu);
  if (auto existing = Modules()[path].lock()) return existing;
  for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* err = dlerror();
    return absl::FailedPreconditionError(
        absl::StrCat("cannot load PKCS#11 module ", path, ": ", err != nullptr ? err : "unknown error"));
  }
  auto get_list = reinterpret_cast<CK_C_GetFunctionList>(dlsym(handle, "C_GetFunctionList"));
  if (get_list == nullptr) {
    dlclose(handle);
    return absl::FailedPreconditionError(absl::StrCat(path, " is not a PKCS#11 module (no C_GetFunctionList)"));
  }
  CK_FUNCTION_LIST_PTR functions = nullptr;
  CK_RV rv = get_list(&functions);
  if (rv != CKR_OK || functions == nullptr) {
    dlclose(handle);
    return absl::FailedPreconditionError(absl::StrCat(path, ": C_GetFunctionList: ", CkrName(rv)));
  }
  CK_C_INITIALIZE_ARGS args = {};
  args.flags = CKF_OS_LOCKING_OK;
  rv = functions->C_Initialize(&args);
  bool finalize = true;
  if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) {
    finalize = false;  // someone else in the process (e.g. OpenSSL's pkcs11 engine) owns initialisation
  } else if (rv != CKR_OK) {
    dlclose(handle);
    return absl::FailedPreconditionError(absl::StrCat(path, ": C_Initialize: ", CkrName(rv)));
  }
  std::shared_ptr<Pkcs11Module> module(new Pkcs11Module(handle, functions, path, finalize));
  Modules()[path] = module;
  return module;
}

std::shared_ptr<Pkcs11Module> Pkcs11Module::ForFunctionList(CK_FUNCTION_LIST_PTR functions, std::string name) {
  return std::shared_ptr<Pkcs11Module>(new Pkcs11Module(nullptr, functions, std::move(name), false));
}

Pkcs11Module::~Pkcs11Module() {
  if (finalize_) functions_->C_Finalize(nullptr);
  if (handle_ != nullptr) dlclose(handle_);
}

}  // namespace linesign::hsm
