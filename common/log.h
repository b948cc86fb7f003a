// Log: one line per event on stderr, "2026-11-22T13:45:01.123Z LEVEL message". Never pass a secret.
#ifndef LINESIGN_COMMON_LOG_H_
#define LINESIGN_COMMON_LOG_H_

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace linesign {

enum class LogLevel { kInfo, kWarning, kError };

// Log writes one line atomically (one write call) to stderr.
void Log(LogLevel level, absl::string_view message);

template <typename... Args>
void LogInfo(const Args&... args) { Log(LogLevel::kInfo, absl::StrCat(args...)); }
template <typename... Args>
void LogWarning(const Args&... args) { Log(LogLevel::kWarning, absl::StrCat(args...)); }
template <typename... Args>
void LogError(const Args&... args) { Log(LogLevel::kError, absl::StrCat(args...)); }

}  // namespace linesign

#endif  // LINESIGN_COMMON_LOG_H_
