#include "hsm/pin.h"

#include <stdlib.h>

#include "common/openssl_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/test_ca.h"

namespace linesign::hsm {
namespace {

using ::testing::HasSubstr;

TEST(PinTest, ReadsFileAndStripsOneNewline) {
  std::string dir = linesign::testing::TempDir("pin");
  ASSERT_TRUE(WriteFile(dir + "/pin", "s3cret\r\n", 0600).ok());
  auto pin = LoadPinFromFile(dir + "/pin");
  ASSERT_TRUE(pin.ok()) << pin.status();
  EXPECT_EQ(pin->value(), "s3cret");
}

TEST(PinTest, RefusesMissingEmptyAndWorldReadableFilesWithoutPrintingThePin) {
  std::string dir = linesign::testing::TempDir("pin");
  EXPECT_THAT(std::string(LoadPinFromFile(dir + "/none").status().message()), HasSubstr("No such file"));
  ASSERT_TRUE(WriteFile(dir + "/empty", "\n", 0600).ok());
  EXPECT_THAT(std::string(LoadPinFromFile(dir + "/empty").status().message()), HasSubstr("is empty"));
  ASSERT_TRUE(WriteFile(dir + "/open", "topsecret", 0644).ok());
  auto st = LoadPinFromFile(dir + "/open").status();
  EXPECT_THAT(std::string(st.message()), HasSubstr("readable by others"));
  EXPECT_THAT(std::string(st.message()), ::testing::Not(HasSubstr("topsecret")));
}

TEST(PinTest, ReadsEnvironment) {
  setenv("LINESIGN_TEST_PIN", "1234", 1);
  auto pin = LoadPinFromEnv("LINESIGN_TEST_PIN");
  ASSERT_TRUE(pin.ok());
  EXPECT_EQ(pin->value(), "1234");
  EXPECT_EQ(getenv("LINESIGN_TEST_PIN"), nullptr) << "the PIN stays in the environment";
  EXPECT_FALSE(LoadPinFromEnv("LINESIGN_TEST_PIN").ok());  // read once
  EXPECT_FALSE(LoadPinFromEnv("LINESIGN_TEST_PIN_UNSET").ok());
}

}  // namespace
}  // namespace linesign::hsm
