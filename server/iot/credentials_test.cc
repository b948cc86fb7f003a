#include "server/iot/credentials.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/iot/endpoint.h"

namespace linesign::iot {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kFileSecret[] = "FILEsecretK7MDENGbPxRfiCYEXAMPLE";
constexpr char kEnvSecret[] = "ENVsecretK7MDENGbPxRfiCYEXAMPLE";

class FakeEnv {
 public:
  FakeEnv& Set(const std::string& k, const std::string& v) {
    vars_[k] = v;
    return *this;
  }
  Environment env() const {
    return [vars = vars_](const std::string& k) -> std::optional<std::string> {
      auto it = vars.find(k);
      if (it == vars.end()) return std::nullopt;
      return it->second;
    };
  }

 private:
  std::map<std::string, std::string> vars_;
};

class CredentialsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TMPDIR");
    dir_ = std::filesystem::path(tmp ? tmp : "/tmp") /
           ("iot-cred-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_ / ".aws");
    Write(dir_ / ".aws/credentials",
          "# comment\n[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = " +
              std::string(kFileSecret) +
              "\n\n[factory]\nAWS_ACCESS_KEY_ID=AKIDFACTORY\naws_secret_access_key=" + kFileSecret +
              "\naws_session_token = FILEtoken\ns3 =\n  max_concurrent_requests = 4\n");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  static void Write(const std::filesystem::path& p, const std::string& text) {
    std::ofstream(p, std::ios::binary) << text;
  }
  FakeEnv Home() { return std::move(FakeEnv().Set("HOME", dir_.string())); }

  std::filesystem::path dir_;
};

TEST_F(CredentialsTest, EnvironmentKeysWinOverTheSharedFile) {
  FakeEnv env = Home();
  env.Set("AWS_ACCESS_KEY_ID", "AKIDENV").Set("AWS_SECRET_ACCESS_KEY", kEnvSecret).Set("AWS_SESSION_TOKEN", "t");
  auto c = ResolveCredentials("", env.env());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->access_key_id, "AKIDENV");
  EXPECT_EQ(c->secret_access_key.value(), kEnvSecret);
  EXPECT_EQ(c->session_token.value(), "t");
  EXPECT_THAT(c->source, HasSubstr("environment"));
}

TEST_F(CredentialsTest, ConfiguredProfileWinsOverEnvironmentKeys) {
  FakeEnv env = Home();
  env.Set("AWS_ACCESS_KEY_ID", "AKIDENV").Set("AWS_SECRET_ACCESS_KEY", kEnvSecret).Set("AWS_PROFILE", "default");
  auto c = ResolveCredentials("factory", env.env());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->access_key_id, "AKIDFACTORY");
  EXPECT_EQ(c->session_token.value(), "FILEtoken");
  EXPECT_THAT(c->source, HasSubstr("profile [factory]"));
}

TEST_F(CredentialsTest, SharedFileDefaultProfileWhenNoEnvironmentKeys) {
  auto c = ResolveCredentials("", Home().env());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->access_key_id, "AKIDDEFAULT");
  EXPECT_EQ(c->secret_access_key.value(), kFileSecret);
  EXPECT_TRUE(c->session_token.empty());
}

TEST_F(CredentialsTest, AwsProfileChoosesTheProfile) {
  FakeEnv env = Home();
  env.Set("AWS_PROFILE", "factory");
  auto c = ResolveCredentials("", env.env());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->access_key_id, "AKIDFACTORY");
}

TEST_F(CredentialsTest, SharedCredentialsFileVariableWinsOverHome) {
  Write(dir_ / "other", "[default]\naws_access_key_id=AKIDOTHER\naws_secret_access_key=x\n");
  FakeEnv env = Home();
  env.Set("AWS_SHARED_CREDENTIALS_FILE", (dir_ / "other").string());
  auto c = ResolveCredentials("", env.env());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->access_key_id, "AKIDOTHER");
}

TEST_F(CredentialsTest, HalfSetEnvironmentIsAnErrorNotAFallThrough) {
  FakeEnv env = Home();
  env.Set("AWS_ACCESS_KEY_ID", "AKIDENV");
  auto c = ResolveCredentials("", env.env());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(c.status().message(), HasSubstr("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"));
}

TEST_F(CredentialsTest, MissingProfileAndMissingFileAreNamedWithoutSecrets) {
  auto missing_profile = ResolveCredentials("nope", Home().env());
  ASSERT_FALSE(missing_profile.ok());
  EXPECT_THAT(missing_profile.status().message(), HasSubstr("has no profile [nope]"));
  FakeEnv env;
  env.Set("AWS_SHARED_CREDENTIALS_FILE", (dir_ / "absent").string());
  auto missing_file = ResolveCredentials("", env.env());
  ASSERT_FALSE(missing_file.ok());
  EXPECT_THAT(missing_file.status().message(), HasSubstr("absent"));
  EXPECT_THAT(missing_file.status().message(), HasSubstr("none in the environment"));
  auto nothing = ResolveCredentials("", FakeEnv().env());
  EXPECT_THAT(nothing.status().message(), HasSubstr("neither AWS_SHARED_CREDENTIALS_FILE nor HOME"));
}

TEST(SharedCredentials, MalformedLinesAreRefusedWithoutEchoingThem) {
  auto bare = ParseSharedCredentials(std::string("[default]\naws_access_key_id=A\n") + kFileSecret + "\n", "f",
                                     "default");
  ASSERT_FALSE(bare.ok());
  EXPECT_THAT(bare.status().message(), HasSubstr("line 3 is neither"));
  EXPECT_THAT(bare.status().message(), Not(HasSubstr(kFileSecret)));
  auto twice = ParseSharedCredentials("[p]\naws_access_key_id=A\naws_access_key_id=B\n", "f", "p");
  EXPECT_THAT(twice.status().message(), HasSubstr("sets aws_access_key_id twice"));
  auto no_secret = ParseSharedCredentials("[p]\naws_access_key_id=A\n", "f", "p");
  EXPECT_THAT(no_secret.status().message(), HasSubstr("lacks aws_secret_access_key"));
  auto dup = ParseSharedCredentials("[p]\naws_access_key_id=A\n[p]\n", "f", "p");
  EXPECT_THAT(dup.status().message(), HasSubstr("appears twice"));
}

TEST(Region, ConfiguredThenAwsRegionThenAwsDefaultRegion) {
  FakeEnv env;
  env.Set("AWS_REGION", "eu-west-1").Set("AWS_DEFAULT_REGION", "eu-central-1");
  EXPECT_EQ(*ResolveRegion("us-east-2", env.env()), "us-east-2");
  EXPECT_EQ(*ResolveRegion("", env.env()), "eu-west-1");
  EXPECT_EQ(*ResolveRegion("", FakeEnv().Set("AWS_DEFAULT_REGION", "eu-central-1").env()), "eu-central-1");
  auto none = ResolveRegion("", FakeEnv().env());
  EXPECT_THAT(none.status().message(), HasSubstr("neither AWS_REGION nor AWS_DEFAULT_REGION"));
  auto bad = ResolveRegion("", FakeEnv().Set("AWS_REGION", "US East").env());
  EXPECT_THAT(bad.status().message(), HasSubstr("'US East' (AWS_REGION) is not a region name"));
}

TEST(Endpoint, ConfiguredThenIotVariableThenGlobalVariableThenPublic) {
  FakeEnv env;
  env.Set("AWS_ENDPOINT_URL_IOT", "http://127.0.0.1:8443").Set("AWS_ENDPOINT_URL", "https://global.example");
  auto configured = ResolveEndpoint("https://iot.example:9443/", "us-east-1", env.env());
  ASSERT_TRUE(configured.ok()) << configured.status();
  EXPECT_EQ(configured->base_url, "https://iot.example:9443");
  EXPECT_EQ(configured->host_header, "iot.example:9443");
  EXPECT_EQ(configured->source, "configuration");
  auto iot = ResolveEndpoint("", "us-east-1", env.env());
  EXPECT_EQ(iot->base_url, "http://127.0.0.1:8443");
  EXPECT_EQ(iot->port, 8443);
  EXPECT_EQ(iot->source, "AWS_ENDPOINT_URL_IOT");
  auto global = ResolveEndpoint("", "us-east-1", FakeEnv().Set("AWS_ENDPOINT_URL", "https://global.example").env());
  EXPECT_EQ(global->base_url, "https://global.example");
  EXPECT_EQ(global->host_header, "global.example");
  auto pub = ResolveEndpoint("", "eu-west-1", FakeEnv().env());
  EXPECT_EQ(pub->base_url, "https://iot.eu-west-1.amazonaws.com");
  EXPECT_EQ(pub->source, "the public endpoint");
  EXPECT_EQ(ResolveEndpoint("", "cn-north-1", FakeEnv().env())->host, "iot.cn-north-1.amazonaws.com.cn");
  auto v6 = ParseEndpoint("http://[::1]:8080", "test");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->host_header, "[::1]:8080");
}

TEST(Endpoint, RefusesPlainHttpOffLoopbackAndUrlsWithPaths) {
  auto http = ResolveEndpoint("", "us-east-1", FakeEnv().Set("AWS_ENDPOINT_URL_IOT", "http://iot.example").env());
  ASSERT_FALSE(http.ok());
  EXPECT_THAT(http.status().message(), HasSubstr("(AWS_ENDPOINT_URL_IOT) uses plain http to a host that is not a loopback"));
  EXPECT_THAT(ParseEndpoint("https://h/x", "c").status().message(), HasSubstr("has a path"));
  EXPECT_THAT(ParseEndpoint("ftp://h", "c").status().message(), HasSubstr("not an http:// or https://"));
  EXPECT_THAT(ParseEndpoint("https://h:0", "c").status().message(), HasSubstr("port outside"));
  EXPECT_THAT(ParseEndpoint("https://h:", "c").status().message(), HasSubstr("port outside"));
  EXPECT_THAT(ParseEndpoint("https://u@h", "c").status().message(), HasSubstr("user part"));
}

TEST(Secret, MoveLeavesNothingBehindAndCopiesAreIndependent) {
  Secret a(std::string("short"));
  Secret b(std::move(a));
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): the moved-from state is the point
  EXPECT_EQ(b.value(), "short");
  Secret c = b;
  c = Secret(std::string("other"));
  EXPECT_EQ(b.value(), "short");
}

}  // namespace
}  // namespace linesign::iot
