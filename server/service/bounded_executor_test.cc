#include "server/service/bounded_executor.h"

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace linesign::service {
namespace {

TEST(BoundedExecutorTest, RefusesBeyondMaxPendingAndRunsEverythingAccepted) {
  absl::Notification release;
  std::atomic<int> ran{0};
  {
    BoundedExecutor executor(/*threads=*/1, /*max_pending=*/2);
    ASSERT_TRUE(executor.TrySubmit([&] {
      release.WaitForNotification();
      ++ran;
    }));
    ASSERT_TRUE(executor.TrySubmit([&] { ++ran; }));
    EXPECT_FALSE(executor.TrySubmit([&] { ++ran; })) << "two accepted and unfinished: the third is refused";
    EXPECT_EQ(executor.pending(), 2u);
    release.Notify();
  }  // the destructor runs what was accepted, then joins
  EXPECT_EQ(ran.load(), 2);
}

TEST(BoundedExecutorTest, AcceptsAgainOnceTasksFinish) {
  BoundedExecutor executor(/*threads=*/2, /*max_pending=*/2);
  for (int i = 0; i < 20; ++i) {
    absl::Notification done;
    ASSERT_TRUE(executor.TrySubmit([&] { done.Notify(); }));
    done.WaitForNotification();
    // The task has run; its slot is given back just after (a loaded machine may deschedule the worker between
    // the two), so wait for that rather than race it.
    while (executor.pending() != 0) std::this_thread::yield();
  }
}

}  // namespace
}  // namespace linesign::service
