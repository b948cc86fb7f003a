#include "server/iot/sigv4.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/civil_time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

#ifndef LINESIGN_AWS4_TESTSUITE_DIR
#error "LINESIGN_AWS4_TESTSUITE_DIR must name the aws4_testsuite folder (CMake cache variable)"
#endif

namespace linesign::iot {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

// The suite's fixed inputs (its README).
constexpr char kAccessKeyId[] = "AKIDEXAMPLE";
constexpr char kSecret[] = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

// Every case of the suite as published: a case disappearing from the folder must fail, not shrink the suite.
constexpr size_t kSuiteCases = 34;

std::string Slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> CaseDirs() {
  std::vector<std::string> out;
  const fs::path root(LINESIGN_AWS4_TESTSUITE_DIR);
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return out;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (entry.is_regular_file() && entry.path().extension() == ".req") {
      out.push_back(fs::relative(entry.path(), root).replace_extension().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string PercentDecode(absl::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && HexValue(s[i + 1]) >= 0 &&
        HexValue(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(HexValue(s[i + 1]) * 16 + HexValue(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// ParseReq reads a suite `.req`: request line, headers (a line starting with a space or tab continues the
// previous header, kept as an obsolete fold), a blank line, the body.
SigV4Request ParseReq(const std::string& text) {
  SigV4Request r;
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  size_t i = 0;
  absl::string_view request_line = lines[i++];
  size_t sp = request_line.find(' ');
  size_t http = request_line.rfind(" HTTP/");
  r.method = std::string(request_line.substr(0, sp));
  absl::string_view target = request_line.substr(sp + 1, http - sp - 1);
  size_t q = target.find('?');
  r.path = std::string(target.substr(0, q));
  if (q != absl::string_view::npos) {
    for (absl::string_view pair : absl::StrSplit(target.substr(q + 1), '&', absl::SkipEmpty())) {
      size_t eq = pair.find('=');
      r.query.emplace_back(PercentDecode(pair.substr(0, eq)),
                           eq == absl::string_view::npos ? "" : PercentDecode(pair.substr(eq + 1)));
    }
  }
  for (; i < lines.size() && !lines[i].empty(); ++i) {
    if (lines[i][0] == ' ' || lines[i][0] == '\t') {
      r.headers.back().second += "\n" + lines[i];
      continue;
    }
    size_t colon = lines[i].find(':');
    r.headers.emplace_back(lines[i].substr(0, colon), lines[i].substr(colon + 1));
  }
  if (i < lines.size()) {
    std::vector<std::string> body(lines.begin() + i + 1, lines.end());
    r.body = absl::StrJoin(body, "\n");
  }
  return r;
}

std::string HeaderOf(const std::string& sreq, absl::string_view name) {
  for (absl::string_view line : absl::StrSplit(sreq, '\n')) {
    if (absl::ConsumePrefix(&line, name) && absl::ConsumePrefix(&line, ":")) return std::string(line);
  }
  return "";
}

absl::Time SuiteTime() {
  return absl::FromCivil(absl::CivilSecond(2015, 8, 30, 12, 36, 0), absl::UTCTimeZone());
}

TEST(Aws4TestSuite, FolderHoldsTheWholeSuite) {
  EXPECT_EQ(CaseDirs().size(), kSuiteCases)
      << "the SigV4 test suite is missing or incomplete at " << LINESIGN_AWS4_TESTSUITE_DIR
      << " (CMake cache variable LINESIGN_AWS4_TESTSUITE_DIR)";
}

class Aws4TestSuiteCase : public ::testing::TestWithParam<std::string> {};

TEST_P(Aws4TestSuiteCase, ReproducesCanonicalRequestStringToSignAndAuthorization) {
  const fs::path base = fs::path(LINESIGN_AWS4_TESTSUITE_DIR) / GetParam();
  auto file = [&](const char* ext) { return Slurp(fs::path(base).replace_extension(ext)); };
  SigV4Request request = ParseReq(file(".req"));
  const std::string creq = file(".creq");

  AwsCredentials credentials;
  credentials.access_key_id = kAccessKeyId;
  credentials.secret_access_key = Secret(kSecret);
  // Temporary credentials: the token is signed when the expected canonical request holds it. The signer adds
  // it itself, so a token the .req carries is taken out of the request and given as the credentials'. The one
  // case whose token is added after signing (post-sts-header-after, which a REST-JSON client following botocore
  // never does: botocore signs the token) is signed without it, which is exactly what that case expects.
  if (creq.find("\nx-amz-security-token:") != std::string::npos) {
    credentials.session_token = Secret(HeaderOf(file(".sreq"), "X-Amz-Security-Token"));
    ASSERT_FALSE(credentials.session_token.empty());
    auto& h = request.headers;
    h.erase(std::remove_if(h.begin(), h.end(), [](const auto& kv) { return kv.first == "X-Amz-Security-Token"; }),
            h.end());
  }

  absl::StatusOr<SigV4Result> result =
      SignV4(request, credentials, {.region = "us-east-1", .service = "service", .time = SuiteTime()});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->canonical_request, creq);
  EXPECT_EQ(result->string_to_sign, file(".sts"));
  EXPECT_EQ(result->authorization, file(".authz"));
}

std::string CaseName(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = fs::path(info.param).filename().string();
  for (char& c : name) {
    if (!absl::ascii_isalnum(c)) c = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(Suite, Aws4TestSuiteCase, ::testing::ValuesIn(CaseDirs()), CaseName);

TEST(SigV4, PathIsNormalisedAndEncodedOnceMore) {
  EXPECT_EQ(NormalizePath(""), "/");
  EXPECT_EQ(NormalizePath("//a//b/"), "/a/b/");
  EXPECT_EQ(NormalizePath("/a/./b/../c"), "/a/c");
  EXPECT_EQ(NormalizePath("/.."), "/");
  // A label the client percent-encoded (':' in a thing name) is encoded again: AWS's rule for all but S3.
  EXPECT_EQ(UriEncode("/things/line%3A1", true), "/things/line%253A1");
  EXPECT_EQ(UriEncode("a/b c", false), "a%2Fb%20c");
}

TEST(SigV4, ResigningReplacesDateTokenAndAuthorization) {
  SigV4Request request{.method = "GET", .path = "/registrationcode", .headers = {{"Host", "iot.example"}}};
  AwsCredentials credentials{.access_key_id = "AKID", .secret_access_key = Secret("s3cr3t"),
                             .session_token = Secret("tok")};
  SigV4Scope scope{.region = "eu-west-1", .service = "iot", .time = SuiteTime()};
  auto first = SignV4(request, credentials, scope);
  ASSERT_TRUE(first.ok()) << first.status();
  scope.time += absl::Seconds(5);
  auto second = SignV4(request, credentials, scope);
  ASSERT_TRUE(second.ok()) << second.status();
  int dates = 0, tokens = 0, authorizations = 0;
  for (const auto& [name, value] : request.headers) {
    dates += name == "X-Amz-Date";
    tokens += name == "X-Amz-Security-Token";
    authorizations += name == "Authorization";
  }
  EXPECT_EQ(dates, 1);
  EXPECT_EQ(tokens, 1);
  EXPECT_EQ(authorizations, 1);
  EXPECT_THAT(second->canonical_request, Not(HasSubstr("authorization")));
  EXPECT_NE(first->authorization, second->authorization);
}

TEST(SigV4, NeitherSecretNorTokenNorSignatureInDebugStringOrErrors) {
  const std::string secret = "SECRETwJalrXUtnFEMIK7MDENGbPxRfiCY";
  const std::string token = "TOKENAQoDYXdzEPTwEXAMPLEtc764bNrC9SAPBSM22";
  AwsCredentials credentials{.access_key_id = "AKIDEXAMPLE", .secret_access_key = Secret(secret),
                             .session_token = Secret(token)};
  SigV4Scope scope{.region = "us-east-1", .service = "iot", .time = SuiteTime()};

  SigV4Request good{.method = "POST", .path = "/certificate/register", .headers = {{"Host", "iot.example"}},
                    .body = "{}"};
  auto result = SignV4(good, credentials, scope);
  ASSERT_TRUE(result.ok()) << result.status();
  const std::string signature = result->authorization.substr(result->authorization.rfind('=') + 1);
  ASSERT_EQ(signature.size(), 64u);
  EXPECT_THAT(result->canonical_request, HasSubstr(token));  // it is signed...
  const std::string debug = result->DebugString();           // ...but never shown
  EXPECT_THAT(debug, HasSubstr("x-amz-security-token:<redacted>"));
  for (const std::string& hidden : {secret, token, signature}) EXPECT_THAT(debug, Not(HasSubstr(hidden)));

  // Each refusal, with the secret and the token present in the credentials and in the header it refuses.
  std::vector<SigV4Request> bad = {
      {.method = "GET", .path = "/x"},                                                  // no Host
      {.method = "GET", .path = "/x", .headers = {{"Host", "h"}, {"X-Leak", secret + "\nInjected: 1"}}},
      {.method = "GET", .path = "/x", .headers = {{"Host", "h"}, {"X-Leak", secret + "\x01"}}},
      {.method = "GET", .path = "x", .headers = {{"Host", "h"}}},
  };
  for (SigV4Request& request : bad) {
    auto refused = SignV4(request, credentials, scope);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
    for (const std::string& hidden : {secret, token}) {
      EXPECT_THAT(std::string(refused.status().message()), Not(HasSubstr(hidden)));
    }
  }
  AwsCredentials no_secret{.access_key_id = "AKIDEXAMPLE", .session_token = Secret(token)};
  auto refused = SignV4(good, no_secret, scope);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("secret access key of access key id AKIDEXAMPLE is empty"));
  EXPECT_THAT(std::string(refused.status().message()), Not(HasSubstr(token)));
}

TEST(SigV4, CertificateIdIsLowerHexSha256) {
  EXPECT_EQ(HexSha256(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

}  // namespace
}  // namespace linesign::iot
