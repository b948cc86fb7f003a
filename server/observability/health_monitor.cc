#include "server/observability/health_monitor.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace linesign::observability {

absl::Status HealthMonitor::RunOnce(absl::Time /*now*/) {
  for (const HealthProbe& probe : probes_) {
    absl::Status st = probe.check();
    if (st.ok()) continue;
    const std::string prefix = absl::StrCat(probe.name, ":");
    Apply(false, absl::StartsWith(st.message(), prefix) ? std::string(st.message())
                                                        : absl::StrCat(prefix, " ", st.message()));
    return absl::OkStatus();
  }
  Apply(true, "");
  return absl::OkStatus();
}

void HealthMonitor::SetDraining() {
  std::lock_guard<std::mutex> lock(mu_);
  draining_ = true;
  if (serving_ == false && reason_ == "draining") return;
  serving_ = false;
  reason_ = "draining";
  set_serving_(false);
  LogInfo("health: NOT_SERVING: draining");
}

void HealthMonitor::Apply(bool serving, const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_) return;  // the probes ran while the drain began: the drain decides
  const bool first = !serving_.has_value();
  if (serving_ == serving && reason_ == reason) return;
  const bool changed = serving_ != serving;
  serving_ = serving;
  reason_ = reason;
  if (changed) set_serving_(serving);
  if (serving) {
    LogInfo(first ? "health: SERVING" : "health: SERVING again");
  } else {
    LogWarning("health: NOT_SERVING: ", reason);
  }
}

bool HealthMonitor::serving() const {
  std::lock_guard<std::mutex> lock(mu_);
  return serving_.value_or(false);
}

std::string HealthMonitor::reason() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reason_;
}

}  // namespace linesign::observability
