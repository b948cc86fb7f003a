// Start-up errors: every misconfiguration makes linesign-server exit non-zero with a message naming the cause.
#include <sys/stat.h>

#include <future>

#include <grpcpp/generic/generic_stub.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/openssl_util.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "linesign/v1/ca.grpc.pb.h"
#include "server/config/config.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_ca.h"

namespace linesign {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::RunCommand;
using testing::TestCa;

class StartupTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto ca = TestCa::Create("ec-p256");
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = new TestCa(*ca);
  }
  static void TearDownTestSuite() { delete ca_; }

  v1::ServerConfig Good() const { return ca_->Config(ca_->dir + "/startup.db"); }

  // Start runs the server on `config` and expects it to exit with status 1 quickly; returns its output.
  testing::ExitResult StartExpectingFailure(const std::string& yaml) {
    std::string path = testing::WriteConfig(ca_->dir, yaml);
    testing::ExitResult r = RunCommand({testing::ServerBinary(), "--config", path}, 60);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    return r;
  }

  static TestCa* ca_;
};
TestCa* StartupTest::ca_ = nullptr;

TEST_F(StartupTest, GoodConfigStartsAndStopsCleanlyOnSigterm) {
  std::string path = testing::WriteConfig(ca_->dir, config::ToYaml(Good()));
  auto server = testing::ServerProcess::Start({"--config", path});
  ASSERT_TRUE(server.ok()) << server.status();
  auto r = (*server)->Stop(SIGTERM);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("stopped cleanly"));
  EXPECT_THAT(r.output, Not(HasSubstr(*ReadFile(ca_->pin_file))));
}

TEST_F(StartupTest, MissingFieldIsNamed) {
  v1::ServerConfig c = Good();
  c.mutable_hsm()->clear_key_uri();
  EXPECT_THAT(StartExpectingFailure(config::ToYaml(c)).output, HasSubstr("hsm.key_uri: required"));
  c = Good();
  c.mutable_ca()->clear_chain_file();
  EXPECT_THAT(StartExpectingFailure(config::ToYaml(c)).output, HasSubstr("ca.chain_file: required"));
  c = Good();
  c.clear_listen();
  EXPECT_THAT(StartExpectingFailure(config::ToYaml(c)).output, HasSubstr("listen: required"));
}

TEST_F(StartupTest, UnknownKeyAndWrongTypeAreNamed) {
  std::string yaml = config::ToYaml(Good());
  EXPECT_THAT(StartExpectingFailure(yaml + "lisen: 1.2.3.4:5\n").output, HasSubstr("lisen"));
  std::string wrong = absl::StrReplaceAll(yaml, {{"validity_days: 30", "validity_days: thirty"}});
  ASSERT_NE(wrong, yaml);
  EXPECT_THAT(StartExpectingFailure(wrong).output, HasSubstr("validity_days"));
}

TEST_F(StartupTest, UnreadablePinFileIsNamed) {
  v1::ServerConfig c = Good();
  c.mutable_hsm()->set_pin_file(ca_->dir + "/no-such-pin");
  EXPECT_THAT(StartExpectingFailure(config::ToYaml(c)).output, HasSubstr("hsm.pin_file: cannot read"));
}

TEST_F(StartupTest, PinFileReadableByOthersIsRefused) {
  std::string pin_copy = ca_->dir + "/pin-world-readable";
  ASSERT_TRUE(WriteFile(pin_copy, *ReadFile(ca_->pin_file), 0644).ok());
  v1::ServerConfig c = Good();
  c.mutable_hsm()->set_pin_file(pin_copy);
  EXPECT_THAT(StartExpectingFailure(config::ToYaml(c)).output, HasSubstr("is readable by others"));
}

TEST_F(StartupTest, WrongPinIsNamedWithoutPrintingIt) {
  std::string wrong = ca_->dir + "/wrong-pin";
  ASSERT_TRUE(WriteFile(wrong, "0000wrong0000\n", 0600).ok());
  v1::ServerConfig c = Good();
  c.mutable_hsm()->set_pin_file(wrong);
  auto r = StartExpectingFailure(config::ToYaml(c));
  EXPECT_THAT(r.output, HasSubstr("CKR_PIN_INCORRECT (wrong PIN)"));
  EXPECT_THAT(r.output, Not(HasSubstr("0000wrong0000")));
}

// hsm.pin_env: the server reads the PIN, then removes the variable from its environment and wipes it from the
// block the kernel shows in /proc/PID/environ (it used to stay there for the process's life).
TEST_F(StartupTest, PinFromTheEnvironmentIsGoneFromProcEnviron) {
  std::string pin = *ReadFile(ca_->pin_file);
  while (!pin.empty() && (pin.back() == '\n' || pin.back() == '\r')) pin.pop_back();
  ASSERT_GE(pin.size(), 4u);
  v1::ServerConfig c = Good();
  c.mutable_hsm()->clear_pin_file();
  c.mutable_hsm()->set_pin_env("LINESIGN_STARTUP_TEST_PIN");
  std::string path = testing::WriteConfig(ca_->dir, config::ToYaml(c));
  setenv("LINESIGN_STARTUP_TEST_PIN", pin.c_str(), 1);  // inherited by the child at exec
  auto server = testing::ServerProcess::Start({"--config", path});
  unsetenv("LINESIGN_STARTUP_TEST_PIN");
  ASSERT_TRUE(server.ok()) << server.status();  // it logged in with the PIN: it did read it
  auto environ_text = ReadFile(absl::StrCat("/proc/", (*server)->pid(), "/environ"));
  ASSERT_TRUE(environ_text.ok()) << environ_text.status();
  EXPECT_THAT(*environ_text, HasSubstr("PATH="));  // the rest of the environment is still there
  EXPECT_THAT(*environ_text, Not(HasSubstr("LINESIGN_STARTUP_TEST_PIN")));
  EXPECT_THAT(*environ_text, Not(HasSubstr("=" + pin)));
  auto r = (*server)->Stop(SIGTERM);
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST_F(StartupTest, KeyUriMatchingNothingIsNamed) {
  v1::ServerConfig c = Good();
  c.mutable_hsm()->set_key_uri("pkcs11:token=linesign;object=no-such-key;type=private");
  EXPECT_THAT(StartExpectingFailure(config::ToYaml(c)).output,
              HasSubstr("no private key on the token matches pkcs11:token=linesign;object=no-such-key"));
  c.mutable_hsm()->set_key_uri("pkcs11:token=no-such-token;object=linesign-intermediate");
  EXPECT_THAT(StartExpectingFailure(config::ToYaml(c)).output,
              HasSubstr("no initialised token matches pkcs11:token=no-such-token"));
}

TEST_F(StartupTest, PinValueInTheUriIsRefused) {
  v1::ServerConfig c = Good();
  c.mutable_hsm()->set_key_uri("pkcs11:token=linesign;object=linesign-intermediate?pin-value=1234");
  EXPECT_THAT(StartExpectingFailure(config::ToYaml(c)).output, HasSubstr("pin-value is refused"));
}

TEST_F(StartupTest, KeyThatDoesNotMatchTheCaCertificateIsRefused) {
  // The root is a CA certificate too, but its key is not the token's.
  v1::ServerConfig c = Good();
  c.mutable_ca()->set_chain_file(ca_->root_pem);
  EXPECT_THAT(StartExpectingFailure(config::ToYaml(c)).output,
              HasSubstr("does not match the public key of the CA certificate"));
}

TEST_F(StartupTest, MissingModuleIsNamed) {
  v1::ServerConfig c = Good();
  c.mutable_hsm()->set_module("/nonexistent/libpkcs11.so");
  EXPECT_THAT(StartExpectingFailure(config::ToYaml(c)).output, HasSubstr("hsm.module: cannot read"));
}

TEST_F(StartupTest, DevModeRefusesNonLoopback) {
  std::string dir = testing::TempDir("linesign-devnl");
  auto r = RunCommand({testing::ServerBinary(), "--dev", dir + "/dev", "--listen", "0.0.0.0:7443"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("development mode listens on loopback only"));
}

TEST_F(StartupTest, DevModeCreatesThenReusesItsDirectory) {
  std::string dir = testing::TempDir("linesign-dev") + "/dev";
  std::string ceremony = testing::SourceDir() + "/deploy/ceremony.sh";
  auto first = testing::ServerProcess::Start({"--dev", dir, "--listen", "127.0.0.1:0", "--ceremony-script", ceremony});
  ASSERT_TRUE(first.ok()) << first.status();
  for (const char* f : {"/root.pem", "/chain.pem", "/config.yaml", "/linesign.db", "/pin"}) {
    struct stat st;
    EXPECT_EQ(stat((dir + f).c_str(), &st), 0) << f;
  }
  std::string chain = *ReadFile(dir + "/chain.pem");
  EXPECT_EQ((*first)->Stop(SIGTERM).exit_code, 0);
  auto second = testing::ServerProcess::Start({"--dev", dir, "--listen", "127.0.0.1:0", "--ceremony-script", ceremony});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(*ReadFile(dir + "/chain.pem"), chain);  // same CA, not a new one
  EXPECT_EQ((*second)->Stop(SIGTERM).exit_code, 0);
  // The generated configuration works with --config too.
  auto cfg = config::LoadConfigFile(dir + "/config.yaml");
  EXPECT_TRUE(cfg.ok()) << cfg.status();
}

// Hardening item 5: gRPC's default SO_REUSEPORT let a second server "listen" on a taken address and the kernel
// split the stations between the two. The second one must refuse to start, and the first keep serving.
TEST_F(StartupTest, SecondServerOnTheSameAddressIsRefused) {
  auto first = testing::ServerProcess::Start({"--config", testing::WriteConfig(ca_->dir, config::ToYaml(Good()))});
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string address = (*first)->address();
  v1::ServerConfig c = Good();
  c.set_listen(address);
  c.mutable_store()->mutable_sqlite()->set_path(ca_->dir + "/second.db");
  auto r = StartExpectingFailure(config::ToYaml(c));
  EXPECT_THAT(r.output, HasSubstr("linesign-server: cannot listen on " + address +
                                  ": the address is in use (is another linesign-server running?)"));
  EXPECT_THAT(r.output, Not(HasSubstr("listening on")));

  // Every call reaches the first server, which still serves.
  for (int i = 0; i < 10; ++i) {
    auto stub = v1::CertificateAuthority::NewStub(ca_->Channel(address));
    v1::GetCaChainResponse chain;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    grpc::Status st = stub->GetCaChain(&ctx, {}, &chain);
    EXPECT_TRUE(st.ok()) << i << ": " << st.error_message();
  }
  grpc::health::v1::HealthCheckResponse health;
  grpc::ClientContext ctx;
  ASSERT_TRUE(grpc::health::v1::Health::NewStub(ca_->Channel(address))->Check(&ctx, {}, &health).ok());
  EXPECT_EQ(health.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_EQ((*first)->Stop(SIGTERM).exit_code, 0);
}

// Reflection is served only when the configuration asks for it (reflection: true); see also
// SecurityTest.ReflectionIsOffByDefault.
TEST_F(StartupTest, ReflectionWhenConfigured) {
  v1::ServerConfig c = Good();
  c.set_reflection(true);
  auto server = testing::ServerProcess::Start({"--config", testing::WriteConfig(ca_->dir, config::ToYaml(c))});
  ASSERT_TRUE(server.ok()) << server.status();
  grpc::GenericStub stub(ca_->Channel((*server)->address()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  const char kListServices[] = {0x3a, 0x00};  // ServerReflectionRequest{list_services: ""}
  grpc::Slice slice(kListServices, sizeof(kListServices));
  grpc::ByteBuffer request(&slice, 1), response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", grpc::StubOptions(),
                 &request, &response, [&done](grpc::Status st) { done.set_value(st); });
  grpc::Status st = done.get_future().get();
  EXPECT_TRUE(st.ok()) << st.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const auto& sl : slices) bytes.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
  EXPECT_THAT(bytes, HasSubstr("linesign.v1.CertificateAuthority"));
  auto stopped = (*server)->Stop(SIGTERM);
  EXPECT_EQ(stopped.exit_code, 0);
  EXPECT_THAT(stopped.output, HasSubstr("reflection: true: the API schema is served to anyone who can connect"));
}

}  // namespace
}  // namespace linesign
