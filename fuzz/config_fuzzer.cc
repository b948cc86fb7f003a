// libFuzzer target: configuration loading — YAML text to ServerConfig, defaults, validation. Any input may be
// refused; none may crash, hang or trip a sanitizer, and a refusal always names what is wrong.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "server/config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 64 * 1024) return 0;  // configuration files are small; the loader is not a streaming parser
  std::string yaml(reinterpret_cast<const char*>(data), size);
  auto config = linesign::config::ParseConfigYaml(yaml);
  if (!config.ok()) {
    if (config.status().message().empty()) abort();
    return 0;
  }
  linesign::config::ApplyDefaults(&*config);
  absl::Status st = linesign::config::Validate(*config);
  if (!st.ok() && st.message().empty()) abort();
  (void)linesign::config::ToYaml(*config);
  return 0;
}
