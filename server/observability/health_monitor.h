// HealthMonitor: the background task that decides what grpc.health.v1 reports. Every interval it runs its probes
// (the server wires two: "hsm", a signature by the CA key, which also recovers a lost session or login the way
// any signature does; "store", Store::Ping, which needs the write lock within a second) and reports SERVING only
// when every probe passes and the server is not draining. A change is passed to `set_serving` and logged once,
// with the first failing probe's reason ("health: NOT_SERVING: store: ping: database is locked", "health:
// SERVING again"); an unchanged state is not logged again.
#ifndef LINESIGN_SERVER_OBSERVABILITY_HEALTH_MONITOR_H_
#define LINESIGN_SERVER_OBSERVABILITY_HEALTH_MONITOR_H_

#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/tasks/background_task.h"

namespace linesign::observability {

class HealthMonitor final : public tasks::BackgroundTask {
 public:
  // HealthProbe is one thing the server needs to serve. `check` must be thread-safe and return within a few
  // seconds; its error message is the reason reported (prefixed by `name` unless it starts with it already).
  struct HealthProbe {
    std::string name;
    std::function<absl::Status()> check;
  };

  // `set_serving` receives every change of state (the HealthService's SetServing), from the task's thread or from
  // SetDraining's caller; never twice the same value in a row.
  HealthMonitor(std::vector<HealthProbe> probes, std::function<void(bool)> set_serving, absl::Duration interval)
      : probes_(std::move(probes)), set_serving_(std::move(set_serving)), interval_(interval) {}

  std::string_view name() const override { return "health"; }
  absl::Duration interval() const override { return interval_; }
  // RunOnce runs the probes in order (stopping at the first failure) and applies the outcome. Always OK: an
  // unhealthy server is the monitor's result, not its failure.
  absl::Status RunOnce(absl::Time now) override;

  // SetDraining reports NOT_SERVING from now on, whatever the probes say (shutdown: load balancers stop sending
  // new stations before the drain refuses them).
  void SetDraining();

  // serving returns the state last reported (false before the first RunOnce).
  bool serving() const;
  // reason returns why the server is not serving ("" when it is).
  std::string reason() const;

 private:
  // Apply reports `serving` (with `reason` when false) if it differs from what was reported last.
  void Apply(bool serving, const std::string& reason);

  const std::vector<HealthProbe> probes_;
  const std::function<void(bool)> set_serving_;
  const absl::Duration interval_;
  mutable std::mutex mu_;
  std::optional<bool> serving_;  // guarded by mu_; nullopt until the first report
  std::string reason_;           // guarded by mu_
  bool draining_ = false;        // guarded by mu_
};

}  // namespace linesign::observability

#endif  // LINESIGN_SERVER_OBSERVABILITY_HEALTH_MONITOR_H_
