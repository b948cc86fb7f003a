// FakeClock: a Clock that stands still until a test sets or advances it.
#ifndef LINESIGN_COMMON_TESTING_FAKE_CLOCK_H_
#define LINESIGN_COMMON_TESTING_FAKE_CLOCK_H_

#include <mutex>

#include "common/clock.h"

namespace linesign::testing {

class FakeClock final : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1700000000)) : now_(start) {}
  absl::Time Now() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return now_;
  }
  void Set(absl::Time t) {
    std::lock_guard<std::mutex> lock(mu_);
    now_ = t;
  }
  void Advance(absl::Duration d) {
    std::lock_guard<std::mutex> lock(mu_);
    now_ += d;
  }

 private:
  mutable std::mutex mu_;
  absl::Time now_;  // guarded by mu_
};

}  // namespace linesign::testing

#endif  // LINESIGN_COMMON_TESTING_FAKE_CLOCK_H_
