// AwsCredentials: the key pair (and optional session token) a request is signed with.
#ifndef LINESIGN_SERVER_IOT_CREDENTIALS_H_
#define LINESIGN_SERVER_IOT_CREDENTIALS_H_

#include <string>

#include "server/iot/secret.h"

namespace linesign::iot {

// AwsCredentials holds an access key id (not secret: it travels in every Authorization header), its secret
// access key and, for temporary credentials, the session token. The secrets are wiped on destruction.
struct AwsCredentials {
  std::string access_key_id;
  Secret secret_access_key;
  Secret session_token;  // empty for long-term credentials
  std::string source;    // where they came from, for messages: "environment", "shared credentials file F [p]"
};

}  // namespace linesign::iot

#endif  // LINESIGN_SERVER_IOT_CREDENTIALS_H_
