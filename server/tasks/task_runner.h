// TaskRunner: owns the server's background tasks and runs each on a thread of its own. Tasks are started in the
// order the server wires them (after the store opens) and stopped in the reverse order (a task started later may
// use one started earlier, never the other way round).
//
// One thread per task rather than one for all: a task that blocks (a network HSM that does not answer the health
// probe, a checkpoint's fsync, later an IoT call) must not delay the others, least of all the health monitor that
// is meant to notice it. The tasks are few (a handful), so the threads cost nothing worth sharing them for.
//
// Sleeping between runs uses real time (a condition variable, so Stop wakes a sleeping task at once); the time
// a task is given and the log's rate limit use the injected Clock. Unit tests of a task call its RunOnce with a
// FakeClock directly.
#ifndef LINESIGN_SERVER_TASKS_TASK_RUNNER_H_
#define LINESIGN_SERVER_TASKS_TASK_RUNNER_H_

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "server/tasks/background_task.h"

namespace linesign::tasks {

class TaskRunner {
 public:
  // kLogEvery: after a task's first failure is logged, further failures of a failing streak are logged at most
  // this often (with how many were not), so a task failing every tick does not flood the log.
  static constexpr absl::Duration kLogEvery = absl::Minutes(1);

  // `clock` is borrowed and must outlive the runner.
  explicit TaskRunner(const Clock* clock) : clock_(clock) {}
  // The destructor stops every task still running (see Stop).
  ~TaskRunner();
  TaskRunner(const TaskRunner&) = delete;
  TaskRunner& operator=(const TaskRunner&) = delete;

  // Start runs `task` once on the caller's thread (so its first result is in place when Start returns: the
  // health monitor has judged the HSM and the store before the server takes calls), then every interval() on a
  // thread of its own until Stop. Ignored (the task is destroyed unrun) after Stop.
  void Start(std::unique_ptr<BackgroundTask> task);

  // Stop stops the tasks in reverse start order: each one's running RunOnce finishes (it is never interrupted),
  // no new one begins, its thread is joined and its OnStop called, before the previous task is stopped.
  // Idempotent.
  void Stop();

  // failures returns how many RunOnce calls of the task named `name` have failed so far (0 for an unknown name).
  int64_t failures(std::string_view name) const;

 private:
  struct Running {
    std::unique_ptr<BackgroundTask> task;
    std::string name;
    std::thread thread;
    // Written by the task's own thread (and Start's first run, before the thread exists); read by failures().
    int64_t failures = 0;            // guarded by mu_
    int64_t streak = 0;              // consecutive failures; guarded by mu_
    int64_t unlogged = 0;            // failures of the streak not logged yet; guarded by mu_
    absl::Time last_logged = absl::InfinitePast();  // guarded by mu_
    bool stop = false;                                // guarded by mu_
  };

  // RunAndLog runs `r`'s task once and logs the outcome as the rate limit allows.
  void RunAndLog(Running& r);
  void Loop(Running& r);

  const Clock* const clock_;  // borrowed
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Running>> running_;  // in start order; guarded by mu_ (the vector, not the tasks)
  bool stopped_ = false;                           // guarded by mu_
};

}  // namespace linesign::tasks

#endif  // LINESIGN_SERVER_TASKS_TASK_RUNNER_H_
