#include "server/iot/operation_stats.h"

#include "gtest/gtest.h"

namespace linesign::iot {
namespace {

// The registrar's metrics of one target, summed over outcomes; other targets and metrics ignored.
TEST(OperationStatsTest, ReadsOneTargetsOperationsFromTheMetrics) {
  const char* text =
      "# HELP linesign_iot_rate_per_second The registrar's current request rate\n"
      "# TYPE linesign_iot_rate_per_second gauge\n"
      "linesign_iot_rate_per_second{target=\"main\",operation=\"RegisterCertificate\"} 4.5\n"
      "linesign_iot_rate_per_second{target=\"second\",operation=\"RegisterCertificate\"} 9\n"
      "linesign_iot_calls_total{target=\"main\",operation=\"RegisterCertificate\",outcome=\"ok\"} 100\n"
      "linesign_iot_calls_total{target=\"main\",operation=\"RegisterCertificate\",outcome=\"ThrottlingException\"} 7\n"
      "linesign_iot_calls_total{target=\"main\",operation=\"AttachPolicy\",outcome=\"ok\"} 98\n"
      "linesign_iot_throttles_total{target=\"main\",operation=\"RegisterCertificate\"} 7\n"
      "linesign_other{target=\"main\",operation=\"RegisterCertificate\"} 1000\n"
      "linesign_iot_calls_total{target=\"main\",operation=\"Broken\"} not-a-number\n";
  std::vector<OperationStats> s = OperationStatsFromMetrics(text, "main");
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].operation, "AttachPolicy");
  EXPECT_EQ(s[0].calls, 98);
  EXPECT_EQ(s[1].operation, "RegisterCertificate");
  EXPECT_EQ(s[1].rate_per_second, 4.5);
  EXPECT_EQ(s[1].calls, 107);
  EXPECT_EQ(s[1].throttles, 7);
  EXPECT_TRUE(OperationStatsFromMetrics(text, "nope").empty());
}

}  // namespace
}  // namespace linesign::iot
