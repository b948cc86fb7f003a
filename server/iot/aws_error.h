// AwsError: what an AWS IoT error answer means, decided by its error code (x-amzn-ErrorType, else the body's
// __type or code), never by the HTTP status alone (409 is both "already exists" and "conflict"; throttling is a
// 400).
#ifndef LINESIGN_SERVER_IOT_AWS_ERROR_H_
#define LINESIGN_SERVER_IOT_AWS_ERROR_H_

#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace linesign::iot {

// AwsErrorKind is what the caller does about an error.
enum class AwsErrorKind {
  kNone,                        // the status is OK, or not an AWS answer nor a transport failure
  kAlreadyExists,               // ResourceAlreadyExistsException: check the existing record, then success
  kCertificateConflict,         // CertificateConflictException: permanent (two CAs with one subject and key)
  kThrottled,                   // ThrottlingException: slow down, retry
  kLimitExceeded,               // LimitExceededException: permanent until a quota is raised
  kCertificateState,            // CertificateStateException: permanent for this request
  kCertificateValidation,       // CertificateValidationException: permanent
  kRegistrationCodeValidation,  // RegistrationCodeValidationException: permanent
  kNotFound,                    // ResourceNotFoundException
  kInvalidRequest,              // InvalidRequestException and unknown 4xx codes: permanent
  kNotAuthorized,               // signature, credentials or IAM refused: fix the configuration
  kServiceFault,                // ServiceUnavailable, InternalFailure, any 5xx: retry
  kTransport,                   // no answer: connection failed, broke or timed out: retry
};

// AwsErrorKindName returns "ResourceAlreadyExists", "Throttled", ... for logs and metrics.
const char* AwsErrorKindName(AwsErrorKind kind);

// IsRetryable: throttling, service faults and transport failures; every other error is permanent.
bool IsRetryable(AwsErrorKind kind);

// ErrorCodeFromAnswer returns the AWS error code of an answer: x-amzn-errortype up to its first ':', else the
// JSON body's "__type" (after any '#'), "code" or "Code"; "" when none.
std::string ErrorCodeFromAnswer(const std::map<std::string, std::string>& lower_case_headers,
                                absl::string_view body);

// KindOfCode classifies an error code; an unknown code is kServiceFault when the HTTP status is 5xx, otherwise
// kInvalidRequest.
AwsErrorKind KindOfCode(absl::string_view code, int http_status);

// AwsErrorStatus builds the status for an AWS error answer: its code is chosen by the kind (kAlreadyExists →
// ALREADY_EXISTS, throttling → RESOURCE_EXHAUSTED,
// faults → UNAVAILABLE, validation → INVALID_ARGUMENT, state, conflict, limits →
// FAILED_PRECONDITION, not found → NOT_FOUND, authorisation → PERMISSION_DENIED); its message is
// "<operation>: <code> (HTTP <status>): <message>"; payloads carry the AWS code and the kind.
absl::Status AwsErrorStatus(absl::string_view operation, absl::string_view code, int http_status,
                            absl::string_view message);

// TransportErrorStatus wraps a transport failure (no answer) of `operation` so that ClassifyAwsError says
// kTransport.
absl::Status TransportErrorStatus(absl::string_view operation, const absl::Status& transport);

// ClassifyAwsError returns the kind recorded in a status made above (kNone for any other status).
AwsErrorKind ClassifyAwsError(const absl::Status& status);

// AwsErrorCode returns the AWS error code recorded in a status made by AwsErrorStatus ("" otherwise).
std::string AwsErrorCode(const absl::Status& status);

}  // namespace linesign::iot

#endif  // LINESIGN_SERVER_IOT_AWS_ERROR_H_
