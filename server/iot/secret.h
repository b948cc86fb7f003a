// Secret: a string that must never be printed (an AWS secret access key, a session token, a signing key) and
// whose bytes are wiped when it is destroyed, moved from or replaced.
#ifndef LINESIGN_SERVER_IOT_SECRET_H_
#define LINESIGN_SERVER_IOT_SECRET_H_

#include <openssl/crypto.h>

#include <string>
#include <utility>

#include "absl/strings/string_view.h"

namespace linesign::iot {

// Secret owns its bytes. It has no operator<< and no conversion to std::string: the only way to read it is
// value(), so every use is visible at the call site. Not thread-safe for writes; const reads are.
class Secret {
 public:
  Secret() = default;
  explicit Secret(std::string value) : value_(std::move(value)) {}
  ~Secret() { Wipe(value_); }
  Secret(Secret&& other) noexcept : value_(std::move(other.value_)) { Wipe(other.value_); }
  Secret& operator=(Secret&& other) noexcept {
    if (this != &other) {
      Wipe(value_);
      value_ = std::move(other.value_);
      Wipe(other.value_);
    }
    return *this;
  }
  Secret(const Secret& other) : value_(other.value_) {}
  Secret& operator=(const Secret& other) {
    if (this != &other) {
      Wipe(value_);
      value_ = other.value_;
    }
    return *this;
  }

  absl::string_view value() const { return value_; }
  bool empty() const { return value_.empty(); }

 private:
  // Wipe overwrites the whole buffer (a short string's inline buffer too, which a move leaves behind), then
  // empties the string.
  static void Wipe(std::string& s) {
    s.resize(s.capacity());
    if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
    s.clear();
  }

  std::string value_;
};

}  // namespace linesign::iot

#endif  // LINESIGN_SERVER_IOT_SECRET_H_
