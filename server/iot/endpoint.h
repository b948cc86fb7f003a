// Region and endpoint of an AWS IoT target: from the configuration, else the AWS environment variables, else the
// public endpoint.
#ifndef LINESIGN_SERVER_IOT_ENDPOINT_H_
#define LINESIGN_SERVER_IOT_ENDPOINT_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/iot/credentials.h"

namespace linesign::iot {

// Endpoint is where a target's requests go.
struct Endpoint {
  std::string scheme;  // "https", or "http" to a loopback address only
  std::string host;    // "iot.us-east-1.amazonaws.com", "127.0.0.1", "::1" (no brackets)
  int port = 443;
  std::string host_header;  // the Host header: host, bracketed when IPv6, ":port" when not the scheme's default
  std::string base_url;     // scheme://host_header, no trailing '/'
  std::string source;       // "configuration", "AWS_ENDPOINT_URL_IOT", "AWS_ENDPOINT_URL", "the public endpoint"
};

// ResolveRegion returns `configured` when set, else AWS_REGION, else AWS_DEFAULT_REGION. FailedPrecondition when
// none is set or the region is not [a-z0-9-]+ (it goes into the signature's scope and the host name).
absl::StatusOr<std::string> ResolveRegion(absl::string_view configured, const Environment& env);

// ResolveEndpoint returns `configured` when set, else AWS_ENDPOINT_URL_IOT, else AWS_ENDPOINT_URL, else
// https://iot.<region>.amazonaws.com (amazonaws.com.cn for cn-* regions). FailedPrecondition, naming where the
// value came from, for a URL that is not http(s)://host[:port][/], and for plain http to anything but a loopback
// address (127.0.0.0/8, ::1, localhost): outside a test, requests to AWS go over TLS.
absl::StatusOr<Endpoint> ResolveEndpoint(absl::string_view configured, absl::string_view region,
                                         const Environment& env);

// ParseEndpoint parses one endpoint URL; `source` names it in messages and is kept in the result.
absl::StatusOr<Endpoint> ParseEndpoint(absl::string_view url, absl::string_view source);

}  // namespace linesign::iot

#endif  // LINESIGN_SERVER_IOT_ENDPOINT_H_
