#include "server/iot/adaptive_rate.h"

#include <algorithm>

namespace linesign::iot {

AdaptiveRate::AdaptiveRate(Options options, absl::Time start)
    : options_(options), rate_(options.ceiling), tokens_(std::max(1.0, options.ceiling)), last_refill_(start),
      last_growth_(start) {}

void AdaptiveRate::Refill(absl::Time now) {
  if (now <= last_refill_) return;
  // The burst is one second's worth at the current rate (at least one call).
  tokens_ = std::min(std::max(1.0, rate_), tokens_ + absl::ToDoubleSeconds(now - last_refill_) * rate_);
  last_refill_ = now;
}

absl::Time AdaptiveRate::TryAcquire(absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  Refill(now);
  // The epsilon absorbs the rounding of many small refills (0.1 + 0.1 + ... falls just short of 1).
  if (tokens_ >= 1.0 - 1e-9) {
    tokens_ = std::max(0.0, tokens_ - 1.0);
    return absl::InfinitePast();
  }
  return now + absl::Seconds((1.0 - tokens_) / rate_);
}

void AdaptiveRate::OnThrottled(absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  ++throttles_;
  Refill(now);
  tokens_ = 0;
  if (now - last_cut_ < options_.cut_cooldown) return;
  rate_ = std::max(options_.floor, rate_ * options_.decrease);
  last_cut_ = now;
  last_growth_ = now;
}

void AdaptiveRate::OnSuccess(absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  if (now <= last_growth_) return;
  Refill(now);
  rate_ = std::min(options_.ceiling, rate_ + options_.ceiling * options_.increase_per_second *
                                                  absl::ToDoubleSeconds(now - last_growth_));
  last_growth_ = now;
}

double AdaptiveRate::rate() const {
  std::lock_guard<std::mutex> lock(mu_);
  return rate_;
}

int AdaptiveRate::throttles() const {
  std::lock_guard<std::mutex> lock(mu_);
  return throttles_;
}

}  // namespace linesign::iot
