// IotTargets: the configured AWS IoT targets, resolved once at start-up (region, endpoint, credentials), each
// with its client; all share one bounded HTTP transport.
#ifndef LINESIGN_SERVER_IOT_IOT_TARGETS_H_
#define LINESIGN_SERVER_IOT_IOT_TARGETS_H_

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "linesign/v1/config.pb.h"
#include "server/iot/credentials.h"
#include "server/iot/iot_client.h"

namespace linesign::iot {

class IotTargets {
 public:
  // Create resolves every target of `config`. A target that cannot be resolved (no credentials, no region) does
  // not stop the server: it is logged once as a warning and Find reports the reason. `clock` is borrowed.
  // Internal only when the HTTP transport cannot be made.
  static absl::StatusOr<std::unique_ptr<IotTargets>> Create(const v1::IotConfig& config, const Environment& env,
                                                            const Clock* clock);

  // Find returns the client of target `name` (owned by this object). NotFound naming the configured targets
  // when there is no such target; FailedPrecondition with the resolution error when it could not be resolved.
  absl::StatusOr<const IotApi*> Find(const std::string& name) const;

 private:
  IotTargets() = default;
  std::map<std::string, absl::StatusOr<std::unique_ptr<RestIotClient>>> targets_;
};

}  // namespace linesign::iot

#endif  // LINESIGN_SERVER_IOT_IOT_TARGETS_H_
