#include "server/tasks/task_runner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/testing/fake_clock.h"

namespace linesign::tasks {
namespace {

// Journal records what the tasks did, in order, across threads.
class Journal {
 public:
  void Add(std::string line) {
    std::lock_guard<std::mutex> lock(mu_);
    lines_.push_back(std::move(line));
    cv_.notify_all();
  }
  std::vector<std::string> lines() const {
    std::lock_guard<std::mutex> lock(mu_);
    return lines_;
  }
  // WaitFor blocks until `line` has been added at least `times` times.
  void WaitFor(const std::string& line, int times = 1) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return std::count(lines_.begin(), lines_.end(), line) >= times; });
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> lines_;
};

class RecordingTask : public BackgroundTask {
 public:
  RecordingTask(std::string name, Journal* journal, absl::Status result = absl::OkStatus(),
                absl::Duration interval = absl::Hours(1))
      : name_(std::move(name)), journal_(journal), result_(std::move(result)), interval_(interval) {}
  std::string_view name() const override { return name_; }
  absl::Duration interval() const override { return interval_; }
  absl::Status RunOnce(absl::Time now) override {
    journal_->Add(absl::StrCat("run ", name_, " ", absl::ToUnixSeconds(now)));
    return result_;
  }
  void OnStop() override { journal_->Add("stop " + name_); }

 private:
  const std::string name_;
  Journal* const journal_;
  const absl::Status result_;
  const absl::Duration interval_;
};

TEST(TaskRunnerTest, StartsInOrderWithTheClocksTimeAndStopsInReverse) {
  testing::FakeClock clock(absl::FromUnixSeconds(1000));
  Journal journal;
  TaskRunner runner(&clock);
  runner.Start(std::make_unique<RecordingTask>("a", &journal));
  clock.Advance(absl::Seconds(1));
  runner.Start(std::make_unique<RecordingTask>("b", &journal));
  clock.Advance(absl::Seconds(1));
  runner.Start(std::make_unique<RecordingTask>("c", &journal));
  runner.Stop();
  runner.Stop();  // idempotent: nothing is stopped twice
  EXPECT_EQ(journal.lines(), (std::vector<std::string>{"run a 1000", "run b 1001", "run c 1002", "stop c",
                                                       "stop b", "stop a"}));
}

TEST(TaskRunnerTest, AFailingTaskKeepsBeingScheduled) {
  testing::FakeClock clock;
  Journal journal;
  TaskRunner runner(&clock);
  runner.Start(std::make_unique<RecordingTask>("failing", &journal, absl::UnavailableError("store: locked"),
                                               absl::Milliseconds(1)));
  const std::string run = absl::StrCat("run failing ", absl::ToUnixSeconds(clock.Now()));
  // The runner counts a round's failure after RunOnce returns: once the sixth round has started, the fifth
  // failure is counted.
  journal.WaitFor(run, 6);
  EXPECT_GE(runner.failures("failing"), 5);
  runner.Stop();
  EXPECT_EQ(journal.lines().back(), "stop failing");
}

// BlockingTask's second RunOnce waits until the test releases it.
class BlockingTask : public BackgroundTask {
 public:
  explicit BlockingTask(Journal* journal) : journal_(journal) {}
  std::string_view name() const override { return "blocking"; }
  absl::Duration interval() const override { return absl::Milliseconds(1); }
  absl::Status RunOnce(absl::Time) override {
    if (runs_++ == 0) return absl::OkStatus();  // the first run, on Start's thread
    journal_->Add("entered");
    release_.get_future().wait();
    journal_->Add("finished");
    return absl::OkStatus();
  }
  void OnStop() override { journal_->Add("stop blocking"); }
  std::promise<void>& release() { return release_; }

 private:
  Journal* const journal_;
  int runs_ = 0;
  std::promise<void> release_;
};

TEST(TaskRunnerTest, StopLetsTheRunningRunOnceFinish) {
  testing::FakeClock clock;
  Journal journal;
  TaskRunner runner(&clock);
  auto task = std::make_unique<BlockingTask>(&journal);
  BlockingTask* blocking = task.get();
  runner.Start(std::move(task));
  journal.WaitFor("entered");
  std::atomic<bool> stop_returned{false};
  std::thread stopper([&] {
    runner.Stop();
    stop_returned = true;
  });
  // Whatever the scheduling, Stop cannot have returned while RunOnce is blocked.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(stop_returned.load());
  blocking->release().set_value();
  stopper.join();
  EXPECT_EQ(journal.lines(), (std::vector<std::string>{"entered", "finished", "stop blocking"}));
}

TEST(TaskRunnerTest, StopWakesASleepingTaskAndStartAfterStopIsIgnored) {
  testing::FakeClock clock;
  Journal journal;
  TaskRunner runner(&clock);
  runner.Start(std::make_unique<RecordingTask>("sleeper", &journal, absl::OkStatus(), absl::Hours(24)));
  runner.Stop();  // would hang for a day if the pause were not interruptible
  runner.Start(std::make_unique<RecordingTask>("late", &journal));
  EXPECT_EQ(journal.lines(), (std::vector<std::string>{"run sleeper 1700000000", "stop sleeper"}));
}

}  // namespace
}  // namespace linesign::tasks
