// Clock: where code that decides by time (leases, schedules, expiry) gets "now", so tests can set it.
#ifndef LINESIGN_COMMON_CLOCK_H_
#define LINESIGN_COMMON_CLOCK_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace linesign {

// Clock returns the current time. Implementations are thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

// RealClock is the system's wall clock.
class RealClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
  // Get returns the process-wide instance (never destroyed).
  static const Clock* Get() {
    static const RealClock* clock = new RealClock();
    return clock;
  }
};

}  // namespace linesign

#endif  // LINESIGN_COMMON_CLOCK_H_
