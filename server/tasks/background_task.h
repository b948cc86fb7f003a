// BackgroundTask: work the server does on its own schedule (the store's WAL checkpoint, the health monitor; next
// the IoT registrar, renewal scanner, CRL publisher, webhook sender). TaskRunner runs them.
#ifndef LINESIGN_SERVER_TASKS_BACKGROUND_TASK_H_
#define LINESIGN_SERVER_TASKS_BACKGROUND_TASK_H_

#include <functional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace linesign::tasks {

class BackgroundTask {
 public:
  virtual ~BackgroundTask() = default;

  // name names the task in logs ("store-checkpoint", "health"). Stable for the task's life.
  virtual std::string_view name() const = 0;
  // interval is the pause between the end of one RunOnce and the start of the next.
  virtual absl::Duration interval() const = 0;
  // RunOnce does one round of the task's work; `now` comes from the server's Clock. An error is logged by the
  // runner (rate-limited) and the task runs again after interval(): a task never stops itself by failing.
  // Called from one thread at a time.
  virtual absl::Status RunOnce(absl::Time now) = 0;
  // OnStop is called once, after the last RunOnce has returned, when the runner stops the task: the place to
  // drain what the task holds (a webhook sender's last batch). Default: nothing.
  virtual void OnStop() {}
};

// FunctionTask is a task that calls `run` every `interval` (the store's checkpoint: one call, no state).
class FunctionTask final : public BackgroundTask {
 public:
  FunctionTask(std::string name, absl::Duration interval, std::function<absl::Status(absl::Time)> run)
      : name_(std::move(name)), interval_(interval), run_(std::move(run)) {}
  std::string_view name() const override { return name_; }
  absl::Duration interval() const override { return interval_; }
  absl::Status RunOnce(absl::Time now) override { return run_(now); }

 private:
  const std::string name_;
  const absl::Duration interval_;
  const std::function<absl::Status(absl::Time)> run_;
};

}  // namespace linesign::tasks

#endif  // LINESIGN_SERVER_TASKS_BACKGROUND_TASK_H_
