#include "server/iot/iot_targets.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace linesign::iot {

absl::StatusOr<std::unique_ptr<IotTargets>> IotTargets::Create(const v1::IotConfig& config, const Environment& env,
                                                               const Clock* clock) {
  std::unique_ptr<IotTargets> targets(new IotTargets());
  if (config.targets().empty()) return targets;
  // One pool for every target, as large as the registrar's calls in flight (iot.max_in_flight): each of its
  // workers has at most one call outstanding, so none waits for a connection.
  const int connections = config.max_in_flight() > 0 ? static_cast<int>(config.max_in_flight()) : 16;
  LINESIGN_ASSIGN_OR_RETURN(std::unique_ptr<CurlTransport> curl,
                            CurlTransport::Create({.max_connections = connections}));
  std::shared_ptr<const HttpTransport> transport(std::move(curl));
  for (const v1::IotTarget& t : config.targets()) {
    absl::StatusOr<IotTarget> resolved = ResolveIotTarget(t.name(), t.region(), t.endpoint(), t.profile(), env);
    if (!resolved.ok()) {
      LogWarning(resolved.status().message(), "; AWS IoT calls to this target will fail until it is fixed");
      targets->targets_.emplace(t.name(), absl::FailedPreconditionError(resolved.status().message()));
      continue;
    }
    LogInfo("iot target '", t.name(), "': ", resolved->endpoint.base_url, " (", resolved->endpoint.source,
            "), region ", resolved->region, ", credentials from ", resolved->credentials.source, ", access key id ",
            resolved->credentials.access_key_id);
    targets->targets_.emplace(t.name(), RestIotClient::Create(*std::move(resolved), transport, clock));
  }
  return targets;
}

absl::StatusOr<const IotApi*> IotTargets::Find(const std::string& name) const {
  auto it = targets_.find(name);
  if (it == targets_.end()) {
    std::vector<std::string> names;
    for (const auto& [n, _] : targets_) names.push_back(n);
    return absl::NotFoundError(absl::StrCat("iot target '", name, "' is not configured (iot.targets: ",
                                            names.empty() ? "none" : absl::StrJoin(names, ", "), ")"));
  }
  if (!it->second.ok()) return it->second.status();
  return it->second->get();
}

}  // namespace linesign::iot
