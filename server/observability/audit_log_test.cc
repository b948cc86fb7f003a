#include "server/observability/audit_log.h"

#include <algorithm>

#include "common/openssl_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/test_ca.h"

namespace linesign::audit {
namespace {

TEST(AuditLogTest, AppendsOneJsonObjectPerLine) {
  std::string path = testing::TempDir("linesign-audit") + "/audit.jsonl";
  {
    auto log = AuditLog::Open(path);
    ASSERT_TRUE(log.ok()) << log.status();
    Entry issued{.time = absl::FromUnixMillis(1700000000123), .rpc = "SignCsr", .identity = "station-1",
                 .peer = "ipv4:127.0.0.1:5000", .profile = "device", .request_id = "r-1", .outcome = "issued",
                 .code = "OK", .serial_hex = "0ABC", .subject = "CN=\"quoted\"\n"};
    (*log)->Record(issued);
    Entry refused{.time = absl::FromUnixSeconds(1700000001), .rpc = "SignCsr", .identity = "station-1",
                  .peer = "ipv4:127.0.0.1:5000", .request_id = std::string("bad\xff", 4), .outcome = "refused",
                  .code = "INVALID_ARGUMENT", .reason = "CSR signature does not verify"};
    (*log)->Record(refused);
  }
  auto log = AuditLog::Open(path);  // reopening appends
  ASSERT_TRUE(log.ok());
  (*log)->Record(Entry{.time = absl::Now(), .rpc = "GetStats", .outcome = "allowed", .code = "OK"});

  auto text = ReadFile(path);
  ASSERT_TRUE(text.ok());
  std::vector<nlohmann::json> lines;
  size_t start = 0;
  for (size_t nl; (nl = text->find('\n', start)) != std::string::npos; start = nl + 1) {
    lines.push_back(nlohmann::json::parse(text->substr(start, nl - start)));
  }
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(start, text->size());
  EXPECT_EQ(lines[0]["time"], "2023-11-14T22:13:20.123Z");
  EXPECT_EQ(lines[0]["serial"], "0ABC");
  EXPECT_EQ(lines[0]["subject"], "CN=\"quoted\"\n");
  EXPECT_FALSE(lines[0].contains("reason"));
  EXPECT_EQ(lines[1]["outcome"], "refused");
  EXPECT_EQ(lines[1]["reason"], "CSR signature does not verify");
  EXPECT_FALSE(lines[1].contains("serial"));
  EXPECT_EQ(lines[2]["rpc"], "GetStats");
}

// With a file the log output repeats refusals and failures only (one write per issued certificate, not two);
// without a file it carries every entry, as it is then the only audit record.
TEST(AuditLogTest, TheLogEchoesSuccessesOnlyWithoutAFile) {
  const Entry issued{.time = absl::Now(), .rpc = "SignCsr", .identity = "station-1", .request_id = "echo-issued",
                     .outcome = "issued", .code = "OK", .serial_hex = "0ABC"};
  const Entry replayed{.time = absl::Now(), .rpc = "SignCsr", .identity = "station-1", .request_id = "echo-replayed",
                       .outcome = "replayed", .code = "OK", .serial_hex = "0ABC"};
  const Entry refused{.time = absl::Now(), .rpc = "SignCsr", .identity = "station-1", .request_id = "echo-refused",
                      .outcome = "refused", .code = "PERMISSION_DENIED", .reason = "no"};
  const Entry failed{.time = absl::Now(), .rpc = "SignCsr", .identity = "station-1", .request_id = "echo-failed",
                     .outcome = "failed", .code = "UNAVAILABLE", .reason = "store"};
  for (const std::string& path : {testing::TempDir("linesign-audit") + "/audit.jsonl", std::string()}) {
    auto log = AuditLog::Open(path);
    ASSERT_TRUE(log.ok()) << log.status();
    ::testing::internal::CaptureStderr();
    for (const Entry* e : {&issued, &replayed, &refused, &failed}) (*log)->Record(*e);
    const std::string echoed = ::testing::internal::GetCapturedStderr();
    const bool file = !path.empty();
    EXPECT_EQ(echoed.find("echo-issued") == std::string::npos, file) << echoed;
    EXPECT_EQ(echoed.find("echo-replayed") == std::string::npos, file) << echoed;
    EXPECT_THAT(echoed, ::testing::HasSubstr("echo-refused"));
    EXPECT_THAT(echoed, ::testing::HasSubstr("echo-failed"));
    if (file) {
      auto text = ReadFile(path);
      ASSERT_TRUE(text.ok());
      EXPECT_EQ(std::count(text->begin(), text->end(), '\n'), 4) << *text;
    }
  }
}

TEST(AuditLogTest, UnwritablePathNamesTheField) {
  auto log = AuditLog::Open("/nonexistent-dir/audit.jsonl");
  EXPECT_EQ(log.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(log.status().message(), ::testing::HasSubstr("audit.file"));
}

}  // namespace
}  // namespace linesign::audit
