#include "server/iot/aws_error.h"

#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace linesign::iot {
namespace {

constexpr char kCodePayload[] = "type.linesign.dev/aws-error-code";
constexpr char kKindPayload[] = "type.linesign.dev/aws-error-kind";
constexpr size_t kMaxMessage = 512;

absl::StatusCode StatusCodeFor(AwsErrorKind kind) {
  switch (kind) {
    case AwsErrorKind::kAlreadyExists: return absl::StatusCode::kAlreadyExists;
    case AwsErrorKind::kThrottled: return absl::StatusCode::kResourceExhausted;
    case AwsErrorKind::kServiceFault: return absl::StatusCode::kUnavailable;
    case AwsErrorKind::kTransport: return absl::StatusCode::kUnavailable;
    case AwsErrorKind::kCertificateValidation:
    case AwsErrorKind::kRegistrationCodeValidation:
    case AwsErrorKind::kInvalidRequest: return absl::StatusCode::kInvalidArgument;
    case AwsErrorKind::kNotFound: return absl::StatusCode::kNotFound;
    case AwsErrorKind::kNotAuthorized: return absl::StatusCode::kPermissionDenied;
    case AwsErrorKind::kCertificateConflict:
    case AwsErrorKind::kLimitExceeded:
    case AwsErrorKind::kCertificateState: return absl::StatusCode::kFailedPrecondition;
    case AwsErrorKind::kNone: return absl::StatusCode::kUnknown;
  }
  return absl::StatusCode::kUnknown;
}

// OneLine keeps the first line of an AWS message, at most kMaxMessage bytes, control bytes as '?': an answer
// such as InvalidSignatureException's carries the canonical request (with the session token) on later lines.
std::string OneLine(absl::string_view message) {
  message = message.substr(0, message.find('\n'));
  std::string out(message.substr(0, kMaxMessage));
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  }
  if (message.size() > kMaxMessage) out += "...";
  return out;
}

void SetKind(absl::Status& status, AwsErrorKind kind) {
  status.SetPayload(kKindPayload, absl::Cord(absl::StrCat(static_cast<int>(kind))));
}

}  // namespace

const char* AwsErrorKindName(AwsErrorKind kind) {
  switch (kind) {
    case AwsErrorKind::kNone: return "None";
    case AwsErrorKind::kAlreadyExists: return "ResourceAlreadyExists";
    case AwsErrorKind::kCertificateConflict: return "CertificateConflict";
    case AwsErrorKind::kThrottled: return "Throttled";
    case AwsErrorKind::kLimitExceeded: return "LimitExceeded";
    case AwsErrorKind::kCertificateState: return "CertificateState";
    case AwsErrorKind::kCertificateValidation: return "CertificateValidation";
    case AwsErrorKind::kRegistrationCodeValidation: return "RegistrationCodeValidation";
    case AwsErrorKind::kNotFound: return "NotFound";
    case AwsErrorKind::kInvalidRequest: return "InvalidRequest";
    case AwsErrorKind::kNotAuthorized: return "NotAuthorized";
    case AwsErrorKind::kServiceFault: return "ServiceFault";
    case AwsErrorKind::kTransport: return "Transport";
  }
  return "?";
}

bool IsRetryable(AwsErrorKind kind) {
  return kind == AwsErrorKind::kThrottled || kind == AwsErrorKind::kServiceFault || kind == AwsErrorKind::kTransport;
}

std::string ErrorCodeFromAnswer(const std::map<std::string, std::string>& headers, absl::string_view body) {
  std::string code;
  if (auto it = headers.find("x-amzn-errortype"); it != headers.end()) {
    code = it->second.substr(0, it->second.find(':'));
  }
  if (code.empty()) {
    nlohmann::json json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (json.is_object()) {
      for (const char* key : {"__type", "code", "Code"}) {
        auto it = json.find(key);
        if (it != json.end() && it->is_string()) {
          code = it->get<std::string>();
          break;
        }
      }
    }
  }
  if (size_t hash = code.rfind('#'); hash != std::string::npos) code = code.substr(hash + 1);
  return std::string(absl::StripAsciiWhitespace(code));
}

AwsErrorKind KindOfCode(absl::string_view code, int http_status) {
  absl::string_view bare = code;
  absl::ConsumeSuffix(&bare, "Exception");
  if (bare == "ResourceAlreadyExists") return AwsErrorKind::kAlreadyExists;
  if (bare == "CertificateConflict") return AwsErrorKind::kCertificateConflict;
  if (bare == "Throttling" || bare == "TooManyRequests" || bare == "RequestLimitExceeded") {
    return AwsErrorKind::kThrottled;
  }
  if (bare == "LimitExceeded") return AwsErrorKind::kLimitExceeded;
  if (bare == "CertificateState") return AwsErrorKind::kCertificateState;
  if (bare == "CertificateValidation") return AwsErrorKind::kCertificateValidation;
  if (bare == "RegistrationCodeValidation") return AwsErrorKind::kRegistrationCodeValidation;
  if (bare == "ResourceNotFound") return AwsErrorKind::kNotFound;
  if (bare == "InvalidRequest") return AwsErrorKind::kInvalidRequest;
  if (bare == "Unauthorized" || bare == "InvalidSignature" || bare == "UnrecognizedClient" ||
      bare == "AccessDenied" || bare == "ExpiredToken" || bare == "IncompleteSignature" ||
      bare == "MissingAuthenticationToken" || bare == "SignatureDoesNotMatch" || bare == "InvalidClientTokenId") {
    return AwsErrorKind::kNotAuthorized;
  }
  if (bare == "ServiceUnavailable" || bare == "InternalFailure" || bare == "Internal" ||
      bare == "InternalServerError") {
    return AwsErrorKind::kServiceFault;
  }
  return http_status >= 500 ? AwsErrorKind::kServiceFault : AwsErrorKind::kInvalidRequest;
}

absl::Status AwsErrorStatus(absl::string_view operation, absl::string_view code, int http_status,
                            absl::string_view message) {
  const AwsErrorKind kind = KindOfCode(code, http_status);
  absl::Status status(StatusCodeFor(kind),
                      absl::StrCat("AWS IoT ", operation, ": ", code.empty() ? "(no error code)" : code, " (HTTP ",
                                   http_status, ")", message.empty() ? "" : ": ", OneLine(message)));
  status.SetPayload(kCodePayload, absl::Cord(code));
  SetKind(status, kind);
  return status;
}

absl::Status TransportErrorStatus(absl::string_view operation, const absl::Status& transport) {
  absl::Status status(transport.code() == absl::StatusCode::kResourceExhausted ? absl::StatusCode::kUnavailable
                                                                                : transport.code(),
                      absl::StrCat("AWS IoT ", operation, ": ", transport.message()));
  SetKind(status, AwsErrorKind::kTransport);
  return status;
}

AwsErrorKind ClassifyAwsError(const absl::Status& status) {
  if (status.ok()) return AwsErrorKind::kNone;
  auto kind = status.GetPayload(kKindPayload);
  int value = 0;
  if (!kind.has_value() || !absl::SimpleAtoi(std::string(*kind), &value)) return AwsErrorKind::kNone;
  return static_cast<AwsErrorKind>(value);
}

std::string AwsErrorCode(const absl::Status& status) {
  auto code = status.GetPayload(kCodePayload);
  return code.has_value() ? std::string(*code) : std::string();
}

}  // namespace linesign::iot
