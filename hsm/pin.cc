#include "hsm/pin.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
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

namespace {

// InitialEnvironment returns the bounds of the environment block the kernel placed in this process at exec (what
// /proc/PID/environ shows): fields 50 and 51 (env_start, env_end) of /proc/self/stat. {0, 0} when unknown.
std::pair<uintptr_t, uintptr_t> InitialEnvironment() {
  std::ifstream in("/proc/self/stat");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string stat = ss.str();
  size_t paren = stat.rfind(')');  // the command name may hold spaces and parentheses
  if (paren == std::string::npos) return {0, 0};
  std::vector<std::string> fields = absl::StrSplit(stat.substr(paren + 1), ' ', absl::SkipEmpty());
  // fields[0] is field 3 (state), so field N is fields[N - 3].
  uint64_t start = 0, end = 0;
  if (fields.size() < 49 || !absl::SimpleAtoi(fields[47], &start) || !absl::SimpleAtoi(fields[48], &end)) {
    return {0, 0};
  }
  return {static_cast<uintptr_t>(start), static_cast<uintptr_t>(end)};
}

}  // namespace

absl::StatusOr<Pin> LoadPinFromEnv(const std::string& name) {
  char* v = getenv(name.c_str());
  if (v == nullptr || *v == '\0') {
    return absl::FailedPreconditionError(absl::StrCat("PIN environment variable ", name, " is unset or empty"));
  }
  Pin pin(v);
  // The variable would otherwise stay readable for the process's life: in environ (inherited by any child) and
  // in the block the kernel shows as /proc/PID/environ (to the same user and root). unsetenv removes the first;
  // the second is overwritten in place, but only when the text lies in that block: a value set by setenv()
  // lives in memory the C library still owns.
  char* entry = v - name.size() - 1;  // "NAME=value"
  size_t entry_size = name.size() + 1 + strlen(v);
  unsetenv(name.c_str());
  auto [start, end] = InitialEnvironment();
  auto at = reinterpret_cast<uintptr_t>(entry);
  if (start != 0 && at >= start && at + entry_size <= end) OPENSSL_cleanse(entry, entry_size);
  return pin;
}

}  // namespace linesign::hsm
