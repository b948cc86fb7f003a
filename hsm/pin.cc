#include "hsm/pin.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/openssl_util.h"

namespace linesign::hsm {

Pin::~Pin() {
  if (!value_.empty()) OPENSSL_cleanse(value_.data(), value_.size());
}

absl::StatusOr<Pin> LoadPinFromFile(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("PIN file ", path, ": ", std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) return absl::FailedPreconditionError(absl::StrCat("PIN file ", path, ": not a file"));
  if (st.st_mode & S_IROTH) {
    return absl::FailedPreconditionError(
        absl::StrCat("PIN file ", path, " is readable by others; run: chmod o-rwx ", path));
  }
  auto content = ReadFile(path);
  if (!content.ok()) return absl::FailedPreconditionError(absl::StrCat("PIN file: ", content.status().message()));
  Pin pin(std::move(*content));
  std::string& v = const_cast<std::string&>(pin.value());
  if (!v.empty() && v.back() == '\n') v.pop_back();
  if (!v.empty() && v.back() == '\r') v.pop_back();
  if (v.empty()) return absl::FailedPreconditionError(absl::StrCat("PIN file ", path, " is empty"));
  return pin;
}

absl::StatusOr<Pin> LoadPinFromEnv(const std::string& name) {
  const char* v = getenv(name.c_str());
  if (v == nullptr || *v == '\0') {
    return absl::FailedPreconditionError(absl::StrCat("PIN environment variable ", name, " is unset or empty"));
  }
  return Pin(v);
}

}  // namespace linesign::hsm
