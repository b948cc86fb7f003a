#include "server/iot/aws_error.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace linesign::iot {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(AwsError, CodeFromHeaderFirstThenBodyTypeThenCode) {
  EXPECT_EQ(ErrorCodeFromAnswer({{"x-amzn-errortype", "ThrottlingException:http://internal.amazon.com/coral/x/"}},
                                R"({"__type":"com.amazonaws.iot#InvalidRequestException"})"),
            "ThrottlingException");
  EXPECT_EQ(ErrorCodeFromAnswer({}, R"({"__type":"com.amazonaws.iot#ResourceAlreadyExistsException"})"),
            "ResourceAlreadyExistsException");
  EXPECT_EQ(ErrorCodeFromAnswer({}, R"({"code":"CertificateConflictException"})"), "CertificateConflictException");
  EXPECT_EQ(ErrorCodeFromAnswer({}, "<html>bad gateway</html>"), "");
}

TEST(AwsError, ClassifiedByCodeNotByStatus) {
  struct Case {
    const char* code;
    int http;
    AwsErrorKind kind;
    absl::StatusCode status;
  } cases[] = {
      {"ResourceAlreadyExistsException", 409, AwsErrorKind::kAlreadyExists, absl::StatusCode::kAlreadyExists},
      {"CertificateConflictException", 409, AwsErrorKind::kCertificateConflict, absl::StatusCode::kFailedPrecondition},
      {"ThrottlingException", 400, AwsErrorKind::kThrottled, absl::StatusCode::kResourceExhausted},
      {"LimitExceededException", 410, AwsErrorKind::kLimitExceeded, absl::StatusCode::kFailedPrecondition},
      {"CertificateStateException", 406, AwsErrorKind::kCertificateState, absl::StatusCode::kFailedPrecondition},
      {"CertificateValidationException", 400, AwsErrorKind::kCertificateValidation,
       absl::StatusCode::kInvalidArgument},
      {"RegistrationCodeValidationException", 400, AwsErrorKind::kRegistrationCodeValidation,
       absl::StatusCode::kInvalidArgument},
      {"InvalidSignatureException", 403, AwsErrorKind::kNotAuthorized, absl::StatusCode::kPermissionDenied},
      {"ServiceUnavailableException", 503, AwsErrorKind::kServiceFault, absl::StatusCode::kUnavailable},
      {"", 502, AwsErrorKind::kServiceFault, absl::StatusCode::kUnavailable},
      {"SomethingNewException", 400, AwsErrorKind::kInvalidRequest, absl::StatusCode::kInvalidArgument},
  };
  for (const Case& c : cases) {
    absl::Status s = AwsErrorStatus("RegisterCertificate", c.code, c.http, "why");
    EXPECT_EQ(ClassifyAwsError(s), c.kind) << c.code;
    EXPECT_EQ(s.code(), c.status) << c.code;
    EXPECT_EQ(AwsErrorCode(s), c.code);
    EXPECT_THAT(std::string(s.message()), HasSubstr(absl::StrCat("AWS IoT RegisterCertificate: ")));
  }
  EXPECT_TRUE(IsRetryable(AwsErrorKind::kThrottled));
  EXPECT_TRUE(IsRetryable(AwsErrorKind::kServiceFault));
  EXPECT_TRUE(IsRetryable(AwsErrorKind::kTransport));
  EXPECT_FALSE(IsRetryable(AwsErrorKind::kAlreadyExists));
  EXPECT_FALSE(IsRetryable(AwsErrorKind::kCertificateConflict));
  EXPECT_EQ(ClassifyAwsError(absl::UnavailableError("x")), AwsErrorKind::kNone);
  EXPECT_EQ(ClassifyAwsError(TransportErrorStatus("X", absl::DeadlineExceededError("t"))), AwsErrorKind::kTransport);
}

TEST(AwsError, MessageKeepsOnlyTheFirstLine) {
  absl::Status s = AwsErrorStatus("GetRegistrationCode", "InvalidSignatureException", 403,
                                  "The request signature we calculated does not match.\nThe Canonical String "
                                  "for this request should have been\n'GET\n/\nx-amz-security-token:TOKEN'");
  EXPECT_THAT(std::string(s.message()), HasSubstr("does not match."));
  EXPECT_THAT(std::string(s.message()), Not(HasSubstr("TOKEN")));
}

}  // namespace
}  // namespace linesign::iot
