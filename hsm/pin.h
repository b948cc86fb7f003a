// Pin: a token PIN held in memory that is wiped on destruction and never printed.
#ifndef LINESIGN_HSM_PIN_H_
#define LINESIGN_HSM_PIN_H_

#include <string>

#include "absl/status/statusor.h"

namespace linesign::hsm {

class Pin {
 public:
  explicit Pin(std::string value) : value_(std::move(value)) {}
  ~Pin();
  Pin(Pin&& other) noexcept : value_(std::move(other.value_)) { other.value_.clear(); }
  Pin& operator=(Pin&&) = delete;
  Pin(const Pin&) = delete;
  Pin& operator=(const Pin&) = delete;

  const std::string& value() const { return value_; }

 private:
  std::string value_;
};

// LoadPinFromFile reads the PIN from `path` (one trailing newline or CRLF removed). Fails with a message naming
// the file, never its content, when it is missing, unreadable, empty, or readable by others (mode o+r).
absl::StatusOr<Pin> LoadPinFromFile(const std::string& path);

// LoadPinFromEnv reads the PIN from environment variable `name`, then removes the variable from the environment
// (children started later do not inherit it) and wipes it from the process's initial environment block (it no
// longer shows in /proc/PID/environ). Fails when it is unset or empty. Not thread-safe (it changes environ): call
// it at start-up, before threads that read the environment exist.
absl::StatusOr<Pin> LoadPinFromEnv(const std::string& name);

}  // namespace linesign::hsm

#endif  // LINESIGN_HSM_PIN_H_
