// AdaptiveRate: a token bucket per AWS IoT operation and target whose rate follows AWS's throttling: cut in half
// on ThrottlingException (multiplicative decrease), grown back slowly on success (additive increase) up to its
// configured ceiling, so linesign yields to another tool sharing the account instead of hammering it.
#ifndef LINESIGN_SERVER_IOT_ADAPTIVE_RATE_H_
#define LINESIGN_SERVER_IOT_ADAPTIVE_RATE_H_

#include <mutex>

#include "absl/time/time.h"

namespace linesign::iot {

class AdaptiveRate {
 public:
  struct Options {
    double ceiling = 9;   // requests/s: the configured rate, never exceeded
    double floor = 0.1;   // requests/s: never cut below
    double decrease = 0.5;  // factor applied on throttling
    // Growth per second of successful calls, as a fraction of the ceiling (0.05: from half to full in 10 s).
    double increase_per_second = 0.05;
    // Throttles within this time of a cut are answers to calls sent before it: they do not cut again.
    absl::Duration cut_cooldown = absl::Seconds(1);
  };
  // The bucket starts full at the ceiling, at time `start`. Thread-safe; times come from the caller's clock.
  AdaptiveRate(Options options, absl::Time start);

  // TryAcquire takes a token if one is available at `now`; otherwise returns the earliest time one will be.
  // Returns absl::InfinitePast() when a token was taken.
  absl::Time TryAcquire(absl::Time now);
  // OnThrottled cuts the rate (once per cut_cooldown) and empties the bucket.
  void OnThrottled(absl::Time now);
  // OnSuccess lets the rate grow back toward the ceiling.
  void OnSuccess(absl::Time now);

  double rate() const;
  int throttles() const;  // throttles reported so far (each one, not only those that cut)

 private:
  void Refill(absl::Time now);  // mu_ held

  const Options options_;
  mutable std::mutex mu_;
  double rate_;       // current requests/s, guarded by mu_
  double tokens_;     // guarded by mu_
  absl::Time last_refill_, last_cut_ = absl::InfinitePast(), last_growth_;
  int throttles_ = 0;
};

}  // namespace linesign::iot

#endif  // LINESIGN_SERVER_IOT_ADAPTIVE_RATE_H_
