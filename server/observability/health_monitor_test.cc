#include "server/observability/health_monitor.h"

#include <gtest/gtest.h>

#include <vector>

#include "common/testing/fake_clock.h"

namespace linesign::observability {
namespace {

struct Fixture {
  absl::Status hsm;
  absl::Status store;
  std::vector<bool> reported;
  HealthMonitor monitor{{{"hsm", [this] { return hsm; }}, {"store", [this] { return store; }}},
                        [this](bool serving) { reported.push_back(serving); },
                        absl::Seconds(2)};
};

TEST(HealthMonitorTest, FollowsTheProbesAndReportsOnlyChanges) {
  testing::FakeClock clock;
  Fixture f;
  ASSERT_TRUE(f.monitor.RunOnce(clock.Now()).ok());
  EXPECT_TRUE(f.monitor.serving());
  f.store = absl::UnavailableError("store: ping: database is locked");
  ASSERT_TRUE(f.monitor.RunOnce(clock.Now()).ok());  // unhealthy is the result, not the task's failure
  EXPECT_FALSE(f.monitor.serving());
  EXPECT_EQ(f.monitor.reason(), "store: ping: database is locked");
  f.hsm = absl::UnavailableError("C_SignInit: CKR_USER_NOT_LOGGED_IN");
  ASSERT_TRUE(f.monitor.RunOnce(clock.Now()).ok());
  EXPECT_EQ(f.monitor.reason(), "hsm: C_SignInit: CKR_USER_NOT_LOGGED_IN");  // the first failing probe, named
  f.store = absl::OkStatus();
  f.hsm = absl::OkStatus();
  ASSERT_TRUE(f.monitor.RunOnce(clock.Now()).ok());
  ASSERT_TRUE(f.monitor.RunOnce(clock.Now()).ok());
  EXPECT_TRUE(f.monitor.serving());
  EXPECT_EQ(f.monitor.reason(), "");
  EXPECT_EQ(f.reported, (std::vector<bool>{true, false, true}));
}

TEST(HealthMonitorTest, DrainingWinsOverHealthyProbes) {
  testing::FakeClock clock;
  Fixture f;
  ASSERT_TRUE(f.monitor.RunOnce(clock.Now()).ok());
  f.monitor.SetDraining();
  f.monitor.SetDraining();
  ASSERT_TRUE(f.monitor.RunOnce(clock.Now()).ok());
  EXPECT_FALSE(f.monitor.serving());
  EXPECT_EQ(f.monitor.reason(), "draining");
  EXPECT_EQ(f.reported, (std::vector<bool>{true, false}));
}

}  // namespace
}  // namespace linesign::observability
