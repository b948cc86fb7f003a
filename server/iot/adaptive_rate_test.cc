#include "server/iot/adaptive_rate.h"

#include "gtest/gtest.h"

namespace linesign::iot {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1'800'000'000);

TEST(AdaptiveRate, NeverFasterThanTheCeiling) {
  AdaptiveRate r({.ceiling = 10}, kStart);
  int taken = 0;
  // Ten seconds in 10 ms steps, taking whenever allowed: the burst of 10, then 10/s.
  for (int ms = 0; ms <= 10'000; ms += 10) {
    while (r.TryAcquire(kStart + absl::Milliseconds(ms)) == absl::InfinitePast()) ++taken;
  }
  EXPECT_EQ(taken, 10 + 100);
}

TEST(AdaptiveRate, ThrottlingHalvesOncePerCooldownAndSuccessGrowsBackToTheCeilingOnly) {
  AdaptiveRate r({.ceiling = 10, .floor = 1, .increase_per_second = 0.05}, kStart);
  r.OnThrottled(kStart);
  EXPECT_DOUBLE_EQ(r.rate(), 5);
  r.OnThrottled(kStart + absl::Milliseconds(200));  // an answer to a call sent before the cut
  EXPECT_DOUBLE_EQ(r.rate(), 5);
  EXPECT_EQ(r.throttles(), 2);
  // Right after a throttle the bucket is empty: the next token is 1/rate away.
  EXPECT_EQ(r.TryAcquire(kStart + absl::Milliseconds(200)), kStart + absl::Milliseconds(400));
  r.OnThrottled(kStart + absl::Seconds(2));
  EXPECT_DOUBLE_EQ(r.rate(), 2.5);
  for (int i = 0; i < 10; ++i) r.OnThrottled(kStart + absl::Seconds(4 + 2 * i));
  EXPECT_DOUBLE_EQ(r.rate(), 1);  // the floor
  // Additive increase: 0.5/s per second of success.
  r.OnSuccess(kStart + absl::Seconds(24));
  EXPECT_DOUBLE_EQ(r.rate(), 1 + 0.5 * 2);
  r.OnSuccess(kStart + absl::Seconds(1000));
  EXPECT_DOUBLE_EQ(r.rate(), 10);  // the ceiling, never more
}

}  // namespace
}  // namespace linesign::iot
