// SigV4: AWS Signature Version 4 (header form, "AWS4-HMAC-SHA256") for the AWS IoT REST-JSON client.
//
// Reproduces every case of the AWS SigV4 test suite (tests/testdata/aws4_testsuite) byte for byte: canonical
// request, string to sign and Authorization header (server/iot/sigv4_test.cc).
#ifndef LINESIGN_SERVER_IOT_SIGV4_H_
#define LINESIGN_SERVER_IOT_SIGV4_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/iot/credentials.h"

namespace linesign::iot {

// SigV4Request is an HTTP request about to be signed.
struct SigV4Request {
  std::string method;  // "GET", "POST", ...
  // path is the request target's path exactly as it is sent (labels already percent-encoded by the caller),
  // starting with '/'. Signing normalises it (dot segments and empty segments removed) and percent-encodes it
  // once more, as SigV4 requires for every service but S3.
  std::string path = "/";
  // query holds decoded name/value pairs; a name without '=' has an empty value. Order does not matter.
  std::vector<std::pair<std::string, std::string>> query;
  // headers in the order they were added; names in any case; a name may repeat. Every header present when
  // Sign is called is signed. It must hold "Host".
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

// SigV4Scope says for whom and when a request is signed.
struct SigV4Scope {
  std::string region;   // "us-east-1"
  std::string service;  // the signing name: "iot"
  absl::Time time;      // the request time; X-Amz-Date is set from it
};

// SigV4Result is what Sign computed. canonical_request may hold the session token (it is a signed header) and
// authorization holds the signature: neither may be logged. DebugString() is the form that may be.
struct SigV4Result {
  std::string canonical_request;
  std::string string_to_sign;
  std::string authorization;  // the Authorization header's value
  // DebugString returns the canonical request and the string to sign with the session token and the signature
  // replaced by "<redacted>", for logs and error messages.
  std::string DebugString() const;
  std::string redacted_canonical_request;
};

// SignV4 signs `request` in place: sets X-Amz-Date (replacing any), X-Amz-Security-Token when `credentials` hold a
// session token (replacing any; it is signed, as botocore does for every service), and Authorization. Fails with
// InvalidArgument, naming the problem but never a secret, when the request has no Host header, a header name that
// is not an HTTP token, a header value with a control character (a line break is allowed only as an obsolete
// fold: followed by a space or tab), an empty access key id or secret, or a region or service that is empty or
// holds a character other than [a-z0-9-].
absl::StatusOr<SigV4Result> SignV4(SigV4Request& request, const AwsCredentials& credentials,
                                   const SigV4Scope& scope);

// UriEncode percent-encodes every byte except the unreserved characters A-Z a-z 0-9 - . _ ~ (and '/' when
// `keep_slash`), with upper-case hex digits, as SigV4 defines it.
std::string UriEncode(absl::string_view s, bool keep_slash);

// NormalizePath removes "." and ".." segments (RFC 3986 §5.2.4) and empty segments from an absolute path,
// keeping a trailing '/'; the empty path becomes "/".
std::string NormalizePath(absl::string_view path);

// CanonicalHeaderValue trims a header value and collapses every run of spaces, tabs and line breaks to one space.
std::string CanonicalHeaderValue(absl::string_view value);

// HexSha256 returns the lower-case hex SHA-256 of `data` (a payload hash, an AWS IoT certificate id from DER).
std::string HexSha256(absl::string_view data);

}  // namespace linesign::iot

#endif  // LINESIGN_SERVER_IOT_SIGV4_H_
