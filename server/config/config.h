// Loading and validating the server configuration (proto/linesign/v1/config.proto).
#ifndef LINESIGN_SERVER_CONFIG_CONFIG_H_
#define LINESIGN_SERVER_CONFIG_CONFIG_H_

#include <string>

#include "absl/status/statusor.h"
#include "linesign/v1/config.pb.h"

namespace linesign::config {

// IsLoopback says whether host:port `listen` names a loopback address (127.0.0.0/8, [::1], localhost).
bool IsLoopback(const std::string& listen);

// ParseConfigYaml converts YAML text to a ServerConfig. Unknown keys and values of the wrong type are
// InvalidArgument naming the field. Defaults are not applied and nothing is validated.
absl::StatusOr<v1::ServerConfig> ParseConfigYaml(const std::string& yaml);

// ApplyDefaults fills every unset optional field with its documented default.
void ApplyDefaults(v1::ServerConfig* config);

// Validate checks every constraint documented in config.proto, and that the files named exist. Errors are
// InvalidArgument with the dotted field path first ("hsm.key_uri: ...").
absl::Status Validate(const v1::ServerConfig& config);

// kMaxCrlDistributionPointBytes bounds a profile's crl_distribution_point.
inline constexpr size_t kMaxCrlDistributionPointBytes = 512;

// CheckCrlDistributionPoint checks a profile's crl_distribution_point: empty, or an http://, https:// or ldap://
// URL with a host, printable ASCII without spaces, every '%' followed by two hex digits, at most
// kMaxCrlDistributionPointBytes. InvalidArgument saying which rule failed (without the field name).
absl::Status CheckCrlDistributionPoint(const std::string& url);

// LoadConfigFile reads, parses, defaults and validates `path`. Relative paths inside the file are resolved
// against the file's directory.
absl::StatusOr<v1::ServerConfig> LoadConfigFile(const std::string& path);

// ToYaml renders a config as YAML (for the generated development configuration).
std::string ToYaml(const v1::ServerConfig& config);

}  // namespace linesign::config

#endif  // LINESIGN_SERVER_CONFIG_CONFIG_H_
