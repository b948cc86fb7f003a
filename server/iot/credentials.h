// AwsCredentials and where they come from: the environment or a shared credentials file, as the AWS CLI finds
// them.
#ifndef LINESIGN_SERVER_IOT_CREDENTIALS_H_
#define LINESIGN_SERVER_IOT_CREDENTIALS_H_

#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/iot/secret.h"

namespace linesign::iot {

// AwsCredentials holds an access key id (not secret: it travels in every Authorization header), its secret
// access key and, for temporary credentials, the session token. The secrets are wiped on destruction.
struct AwsCredentials {
  std::string access_key_id;
  Secret secret_access_key;
  Secret session_token;  // empty for long-term credentials
  // source says where they came from, for messages: "environment (AWS_ACCESS_KEY_ID)" or
  // "shared credentials file /root/.aws/credentials, profile [factory]". Never a secret.
  std::string source;
};

// Environment looks a variable up; nullopt when unset. ProcessEnvironment() reads the process's; tests pass
// their own.
using Environment = std::function<std::optional<std::string>(const std::string& name)>;
Environment ProcessEnvironment();

// ResolveCredentials finds the credentials a target signs with, in this order (botocore's, so an operator's AWS
// CLI and linesign agree):
//   1. `configured_profile` not empty (the target's `profile`): that profile of the shared credentials file;
//      the environment's keys are then ignored, as botocore ignores them for an explicit profile.
//   2. AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN when set). Only one of the two set is
//      an error, not a fall-through: half-configured credentials are a mistake to report.
//   3. The shared credentials file (AWS_SHARED_CREDENTIALS_FILE, else $HOME/.aws/credentials), profile
//      AWS_PROFILE, else "default"; aws_access_key_id, aws_secret_access_key, aws_session_token.
// FailedPrecondition, naming the variables, file, profile and line, but never a value, when none applies or the
// file or profile is unusable.
absl::StatusOr<AwsCredentials> ResolveCredentials(absl::string_view configured_profile, const Environment& env);

// ParseSharedCredentials reads `profile` out of the INI text of a shared credentials file named `path` (for
// messages). NotFound when the profile is absent; FailedPrecondition when it lacks a key or a line is malformed.
absl::StatusOr<AwsCredentials> ParseSharedCredentials(absl::string_view text, absl::string_view path,
                                                      absl::string_view profile);

}  // namespace linesign::iot

#endif  // LINESIGN_SERVER_IOT_CREDENTIALS_H_
