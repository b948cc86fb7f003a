#include "server/service/drain_tracker.h"

#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace linesign::service {
namespace {

using ::testing::HasSubstr;

// FakeStream records what the tracker asked of it; a real stream's Drain finishes it, which RemoveStream models.
class FakeStream : public Drainable {
 public:
  FakeStream(DrainTracker* tracker, std::string identity) : tracker_(tracker), identity_(std::move(identity)) {}
  void Drain() override {
    ++drained;
    if (remove_on_drain) tracker_->RemoveStream(this, identity_);  // inline, as a stream that finishes at once
  }
  void Ref() override { ++refs; }
  void Unref() override { --refs; }
  int drained = 0;
  int refs = 0;
  bool remove_on_drain = false;

 private:
  DrainTracker* tracker_;
  std::string identity_;
};

TEST(DrainTrackerTest, LimitsStreamsPerIdentityNamingTheSetting) {
  DrainTracker tracker({.max_streams_per_identity = 2, .max_streams = 10});
  FakeStream a(&tracker, "st1"), b(&tracker, "st1"), c(&tracker, "st1"), d(&tracker, "st2");
  ASSERT_TRUE(tracker.AddStream(&a, "st1").ok());
  ASSERT_TRUE(tracker.AddStream(&b, "st1").ok());
  absl::Status third = tracker.AddStream(&c, "st1");
  EXPECT_EQ(third.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(third.message(), HasSubstr("station 'st1' already has 2 SignCsrStream streams open "
                                         "(signer.max_streams_per_station 2)"));
  EXPECT_TRUE(tracker.AddStream(&d, "st2").ok()) << "another identity is not limited by st1's streams";
  tracker.RemoveStream(&a, "st1");
  EXPECT_TRUE(tracker.AddStream(&c, "st1").ok()) << "a closed stream frees its place";
  EXPECT_EQ(tracker.open_streams(), 3u);
}

TEST(DrainTrackerTest, LimitsStreamsOverallNamingTheSetting) {
  DrainTracker tracker({.max_streams_per_identity = 5, .max_streams = 2});
  FakeStream a(&tracker, "a"), b(&tracker, "b"), c(&tracker, "c");
  ASSERT_TRUE(tracker.AddStream(&a, "a").ok());
  ASSERT_TRUE(tracker.AddStream(&b, "b").ok());
  absl::Status st = tracker.AddStream(&c, "c");
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(st.message(), HasSubstr("the server already has 2 SignCsrStream streams open (limits.max_streams 2)"));
}

TEST(DrainTrackerTest, BeginDrainDrainsEveryStreamAndRefusesNewWork) {
  DrainTracker tracker({.max_streams_per_identity = 5, .max_streams = 5});
  FakeStream a(&tracker, "a"), b(&tracker, "b");
  b.remove_on_drain = true;  // b finishes inside Drain: the tracker must not hold its lock then
  ASSERT_TRUE(tracker.AddStream(&a, "a").ok());
  ASSERT_TRUE(tracker.AddStream(&b, "b").ok());
  tracker.BeginDrain();
  EXPECT_EQ(a.drained, 1);
  EXPECT_EQ(b.drained, 1);
  EXPECT_EQ(a.refs, 0) << "the reference taken for the drain is given back";
  EXPECT_TRUE(tracker.draining());
  EXPECT_EQ(tracker.AddStream(&b, "b").code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(DrainTracker::Draining().message(), HasSubstr("server is shutting down"));
  EXPECT_FALSE(tracker.Enter(/*even_when_draining=*/false));
  EXPECT_TRUE(tracker.Enter(/*even_when_draining=*/true)) << "an admin read is still taken";
  tracker.Leave();
  EXPECT_FALSE(tracker.WaitUntilIdle(absl::Now())) << "stream a is still open";
  tracker.RemoveStream(&a, "a");
  EXPECT_TRUE(tracker.WaitUntilIdle(absl::Now()));
}

TEST(DrainTrackerTest, WaitUntilIdleWaitsForWorkInProgress) {
  DrainTracker tracker({.max_streams_per_identity = 1, .max_streams = 1});
  EXPECT_TRUE(tracker.WaitUntilIdle(absl::Now())) << "nothing entered";
  ASSERT_TRUE(tracker.Enter(false));
  EXPECT_FALSE(tracker.WaitUntilIdle(absl::Now()));
  std::thread leave([&] { tracker.Leave(); });
  EXPECT_TRUE(tracker.WaitUntilIdle(absl::InfiniteFuture()));
  leave.join();
}

}  // namespace
}  // namespace linesign::service
