#include "hsm/pkcs11_uri.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace linesign::hsm {
namespace {

using ::testing::HasSubstr;

TEST(Pkcs11UriTest, ParsesPathAndQueryAttributes) {
  auto uri = ParsePkcs11Uri("pkcs11:token=Line%201;object=ca-key;id=%01%02;type=private;serial=abc?pin-source=file:/p");
  ASSERT_TRUE(uri.ok()) << uri.status();
  EXPECT_EQ(uri->token, "Line 1");
  EXPECT_EQ(uri->object, "ca-key");
  EXPECT_EQ(uri->id, std::string("\x01\x02", 2));
  EXPECT_EQ(uri->serial, "abc");
  EXPECT_EQ(uri->pin_source, "file:/p");
  EXPECT_EQ(uri->ToString(), "pkcs11:token=Line 1;serial=abc;object=ca-key;id=%01%02;type=private");
}

TEST(Pkcs11UriTest, RefusesWhatItCannotUse) {
  struct Case {
    const char* uri;
    const char* message;
  } cases[] = {
      {"token=x;object=y", "must start with 'pkcs11:'"},
      {"pkcs11:token=x", "name the key with 'object=' or 'id='"},
      {"pkcs11:token=x;object=y;colour=red", "unknown attribute 'colour'"},
      {"pkcs11:token=x;token=z;object=y", "'token' given twice"},
      {"pkcs11:token=x%2;object=y", "bad percent-encoding in 'token'"},
      {"pkcs11:object=y?pin-value=1234", "pin-value is refused"},
      {"pkcs11:object=y;type=cert", "type=private"},
      {"pkcs11:object=y;slot-id=abc", "slot-id"},
      {"pkcs11:object", "has no value"},
  };
  for (const auto& c : cases) {
    auto uri = ParsePkcs11Uri(c.uri);
    EXPECT_FALSE(uri.ok()) << c.uri;
    EXPECT_THAT(std::string(uri.status().message()), HasSubstr(c.message)) << c.uri;
  }
}

}  // namespace
}  // namespace linesign::hsm
