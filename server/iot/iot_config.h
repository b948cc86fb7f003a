// The AWS IoT part of the configuration (IotConfig, ProfileIotConfig in proto/linesign/v1/config.proto): its
// start-up checks, its defaults, and the thing-name template.
#ifndef LINESIGN_SERVER_IOT_IOT_CONFIG_H_
#define LINESIGN_SERVER_IOT_IOT_CONFIG_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "linesign/v1/config.pb.h"

namespace linesign::iot {

// DefaultRates returns the requests per second linesign allows itself per operation: about 90 % of AWS IoT's
// default per-account quotas, so another tool sharing the account keeps some room.
const std::map<std::string, double>& DefaultRates();

// EffectiveRates returns DefaultRates() overridden by `target.rates`.
std::map<std::string, double> EffectiveRates(const v1::IotTarget& target);

// ValidateIotConfig checks `iot` and every profile's `iot`; InvalidArgument naming the field, e.g.
// "iot.targets[1].name: 'main' is given twice", "profiles.device.iot.register: 'always' is not with_ca,
// without_ca or off", "profiles.device.iot.thing_name: unknown placeholder {subject.O} …".
absl::Status ValidateIotConfig(const v1::ServerConfig& config);

// IotConfigWarnings lists what start-up should warn about without refusing: a profile naming a target that is
// not configured (its certificates will fail with that reason).
std::vector<std::string> IotConfigWarnings(const v1::ServerConfig& config);

// ThingNameFields are the values a thing-name template may use.
struct ThingNameFields {
  std::string subject_cn;
  std::string serial;  // upper-case hex
  std::string station;
};

// ExpandThingName fills `template_text`'s placeholders. InvalidArgument when the result is not an AWS IoT thing
// name ([a-zA-Z0-9:_-]{1,128}; e.g. a CN with a space), naming the template and the offending character.
absl::StatusOr<std::string> ExpandThingName(absl::string_view template_text, const ThingNameFields& fields);

}  // namespace linesign::iot

#endif  // LINESIGN_SERVER_IOT_IOT_CONFIG_H_
