#include "client/lifecycle_commands.h"

#include "gtest/gtest.h"

namespace linesign::client {
namespace {

// --expiring-within: a positive whole number and a unit; anything else is refused naming the option.
TEST(LifecycleCommandsTest, ExpiringWithinIsReadOrRefusedByName) {
  EXPECT_EQ(*ParseWithin("60d"), absl::Hours(24 * 60));
  EXPECT_EQ(*ParseWithin("12h"), absl::Hours(12));
  EXPECT_EQ(*ParseWithin("30m"), absl::Minutes(30));
  for (const char* bad : {"", "d", "60", "-5d", "0d", "5w", "1.5d"}) {
    auto parsed = ParseWithin(bad);
    EXPECT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.status().message(),
              std::string("--expiring-within '") + bad + "' is not a duration such as 60d, 12h, 30m or 45s");
  }
  LifecycleOptions o;
  o.expiring_within = "60d";
  o.status = "renewal_due";
  v1::ListCertificatesRequest req;
  ASSERT_TRUE(ApplyListLifecycleOptions(o, absl::FromUnixSeconds(1000), &req).ok());
  EXPECT_EQ(req.expiring_before().seconds(), 1000 + 60 * 86400);
  EXPECT_EQ(req.status(), "renewal_due");
}

}  // namespace
}  // namespace linesign::client
