// The load balancer recipes of deploy/, run as written with Debian's HAProxy and nginx in front of the real
// server: HAProxy passes the stations' TLS through untouched; nginx re-encrypts and forwards the station's
// certificate, which the server believes only from a proxy it was told to trust (tls.trusted_proxies). Each test
// proves the station's identity arrives intact by retrying a request id directly: the server answers with the
// same certificate only to the same station.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "common/openssl_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "linesign/v1/ca.grpc.pb.h"
#include "server/config/config.h"
#include "tests/testing/certs.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_ca.h"

namespace linesign {
namespace {

using ::testing::HasSubstr;
using testing::ServerProcess;
using testing::TestCa;

// Replace replaces `from` in `text` by `to`, failing the test when the recipe no longer says `from` (so the
// test notices a recipe that drifted from what it checks).
void Replace(std::string* text, const std::string& from, const std::string& to) {
  const size_t at = text->find(from);
  ASSERT_NE(at, std::string::npos) << "the recipe no longer contains '" << from << "'";
  text->replace(at, from.size(), to);
}

std::string Port(const std::string& address) { return address.substr(address.rfind(':') + 1); }

std::string UrlEscape(const std::string& pem) {
  std::string out;
  for (unsigned char c : pem) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_') {
      out.push_back(static_cast<char>(c));
    } else {
      out += absl::StrFormat("%%%02X", c);
    }
  }
  return out;
}

struct Signed {
  grpc::Status status;
  v1::SignCsrResponse response;
};

class LoadBalancerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = TestCa::Create("ec-p256");
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = std::make_unique<TestCa>(*ca);
    config_ = ca_->Config(ca_->dir + "/linesign.db");
    config_.set_health_check_interval_ms(100);
    dir_ = testing::TempDir("lb");
    station_ = ca_->StationCredentials("station-1");
  }
  void StartServer() {
    auto server = ServerProcess::Start({"--config", testing::WriteConfig(ca_->dir, config::ToYaml(config_))});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_FALSE(server_->http_address().empty());
  }
  Signed Sign(const std::string& address, const tls::KeyAndCertificate& who, const std::string& request_id,
              const std::string& forwarded_header = "") {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    if (!forwarded_header.empty()) ctx.AddMetadata("x-linesign-client-cert", forwarded_header);
    v1::SignCsrRequest request;
    auto [csr, fresh] = csrs_.try_emplace(request_id);
    if (fresh) csr->second = testing::Csr("ec-p256", "/CN=DEVICE-" + request_id);
    request.set_csr_der(csr->second);  // a retry of an id sends the same CSR
    request.set_request_id(request_id);
    Signed out;
    out.status = v1::CertificateAuthority::NewStub(ca_->ChannelWith(address, who))->SignCsr(&ctx, request,
                                                                                            &out.response);
    return out;
  }
  // SignThroughUntilUp retries through a load balancer that is still starting or has not seen the replica healthy
  // yet, for up to 60 s.
  Signed SignThroughUntilUp(const std::string& address, const std::string& request_id) {
    Signed s;
    for (int i = 0; i < 120; ++i) {
      s = Sign(address, station_, request_id);
      if (s.status.error_code() != grpc::StatusCode::UNAVAILABLE) break;
      usleep(500 * 1000);
    }
    return s;
  }
  // ExpectRecordedFor checks that `request_id`, sent through the load balancer, was recorded for station-1: the
  // same id sent directly by station-1 replays the same certificate.
  void ExpectRecordedForStation1(const Signed& through, const std::string& request_id) {
    ASSERT_TRUE(through.status.ok()) << through.status.error_message();
    Signed direct = Sign(server_->address(), station_, request_id);
    ASSERT_TRUE(direct.status.ok()) << direct.status.error_message();
    EXPECT_TRUE(direct.response.replayed()) << request_id << " was not recorded for station-1";
    EXPECT_EQ(direct.response.serial_hex(), through.response.serial_hex());
  }
  void Write(const std::string& path, const std::string& content, mode_t mode = 0600) {
    ASSERT_TRUE(WriteFile(path, content, mode).ok()) << path;
  }

  std::unique_ptr<TestCa> ca_;
  v1::ServerConfig config_;
  std::string dir_;
  tls::KeyAndCertificate station_;
  std::unique_ptr<ServerProcess> server_;
  std::map<std::string, std::string> csrs_;  // by request id
};

// deploy/haproxy/linesign.cfg with its replica lines pointed at the server: the station's own TLS reaches the
// server (its identity, checked by a replayed request id), and HAProxy's health check is the server's /readyz.
TEST_F(LoadBalancerTest, HaproxyPassesTheStationsTlsThroughToTheReplica) {
  StartServer();
  auto recipe = ReadFile(testing::SourceDir() + "/deploy/haproxy/linesign.cfg");
  ASSERT_TRUE(recipe.ok()) << recipe.status();
  std::string cfg = *recipe;
  const int lb_port = testing::FreeLoopbackPort();
  Replace(&cfg, "bind :8443", absl::StrCat("bind 127.0.0.1:", lb_port));
  Replace(&cfg, "server replica1 10.0.0.11:8443 check port 9443",
          absl::StrCat("server replica1 ", server_->address(), " check port ", Port(server_->http_address())));
  Replace(&cfg, "    server replica2 10.0.0.12:8443 check port 9443\n", "");
  Write(dir_ + "/haproxy.cfg", cfg, 0644);
  ASSERT_EQ(access("/usr/sbin/haproxy", X_OK), 0) << "haproxy is missing: install package haproxy";
  auto check = testing::RunCommand({"/usr/sbin/haproxy", "-c", "-f", dir_ + "/haproxy.cfg"});
  ASSERT_EQ(check.exit_code, 0) << check.output;
  testing::ChildProcess haproxy({"/usr/sbin/haproxy", "-db", "-f", dir_ + "/haproxy.cfg"}, dir_ + "/haproxy.log");
  ASSERT_TRUE(haproxy.started());

  const std::string lb = absl::StrCat("127.0.0.1:", lb_port);
  Signed through = SignThroughUntilUp(lb, "haproxy-1");
  ExpectRecordedForStation1(through, "haproxy-1");
  // A stranger's certificate is refused by the server itself, through the load balancer.
  auto other = tls::MakeTlsCa("stranger CA", absl::Now() - absl::Hours(1), absl::Now() + absl::Hours(24));
  ASSERT_TRUE(other.ok());
  auto stranger = tls::IssueLeaf(*other, {.common_name = "station-1", .not_before = absl::Now() - absl::Hours(1),
                                          .not_after = absl::Now() + absl::Hours(1)});
  ASSERT_TRUE(stranger.ok());
  Signed refused = Sign(lb, *stranger, "haproxy-2");
  EXPECT_NE(refused.status.error_code(), grpc::StatusCode::OK);
  server_->Stop(SIGTERM);
}

class NginxTest : public LoadBalancerTest {
 protected:
  // StartNginx runs deploy/nginx/linesign.conf with its paths and addresses pointed at this test's files and
  // server; returns nginx's address.
  std::string StartNginx() {
    const std::string tls = ca_->dir + "/tls";
    auto proxy = ca_->StationCredentials("edge-proxy");
    Write(dir_ + "/edge-proxy.pem", proxy.certificate_pem, 0644);
    Write(dir_ + "/edge-proxy.key", proxy.key_pem);
    Write(dir_ + "/station-ca.pem", ca_->station_ca.certificate_pem, 0644);
    auto recipe = ReadFile(testing::SourceDir() + "/deploy/nginx/linesign.conf");
    EXPECT_TRUE(recipe.ok()) << recipe.status();
    std::string conf = recipe.value_or("");
    const int port = testing::FreeLoopbackPort();
    Replace(&conf, "listen 8443 ssl http2;", absl::StrCat("listen 127.0.0.1:", port, " ssl http2;"));
    Replace(&conf, "server 10.0.0.11:8443 max_fails=2 fail_timeout=10s;",
            absl::StrCat("server ", server_->address(), " max_fails=2 fail_timeout=10s;"));
    Replace(&conf, "        server 10.0.0.12:8443 max_fails=2 fail_timeout=10s;\n", "");
    Replace(&conf, "/etc/linesign/lb/server.pem", tls + "/server.pem");
    Replace(&conf, "/etc/linesign/lb/server.key", tls + "/server.key");
    Replace(&conf, "/etc/linesign/lb/station-ca.pem", dir_ + "/station-ca.pem");
    Replace(&conf, "/etc/linesign/lb/edge-proxy.pem", dir_ + "/edge-proxy.pem");
    Replace(&conf, "/etc/linesign/lb/edge-proxy.key", dir_ + "/edge-proxy.key");
    Replace(&conf, "/etc/linesign/lb/replica-ca.pem", dir_ + "/station-ca.pem");  // it issued the server's too
    Replace(&conf, "grpc_ssl_name linesign.internal;", "grpc_ssl_name localhost;");
    std::filesystem::create_directories(dir_ + "/logs");
    Write(dir_ + "/nginx.conf", conf, 0644);
    const std::string globals = absl::StrCat("daemon off; pid ", dir_, "/nginx.pid; error_log ", dir_,
                                             "/logs/error.log info;");
    EXPECT_EQ(access("/usr/sbin/nginx", X_OK), 0) << "nginx is missing: install package nginx-light";
    auto check = testing::RunCommand({"/usr/sbin/nginx", "-t", "-p", dir_ + "/", "-c", dir_ + "/nginx.conf", "-g",
                                      globals});
    EXPECT_EQ(check.exit_code, 0) << check.output;
    nginx_ = std::make_unique<testing::ChildProcess>(
        std::vector<std::string>{"/usr/sbin/nginx", "-p", dir_ + "/", "-c", dir_ + "/nginx.conf", "-g", globals},
        dir_ + "/nginx.out");
    return absl::StrCat("localhost:", port);
  }
  void TearDown() override {
    nginx_.reset();
    if (server_ != nullptr) server_->Stop(SIGTERM);
  }
  std::unique_ptr<testing::ChildProcess> nginx_;
};

// Through nginx: the station signs as itself; a station that sends its own x-linesign-client-cert (someone
// else's certificate) through nginx still signs as itself, because nginx replaces the header.
TEST_F(NginxTest, ForwardsTheStationsCertificateToAServerThatTrustsIt) {
  config_.mutable_tls()->add_trusted_proxies("edge-proxy");
  StartServer();
  const std::string lb = StartNginx();
  Signed through = SignThroughUntilUp(lb, "nginx-1");
  ExpectRecordedForStation1(through, "nginx-1");

  auto other_station = ca_->StationCredentials("line1-st1");
  Signed forged = Sign(lb, station_, "nginx-2", UrlEscape(other_station.certificate_pem));
  ExpectRecordedForStation1(forged, "nginx-2");
  // line1-st1 never asked for nginx-2: its own retry of that id is a new request, not a replay.
  Signed theirs = Sign(server_->address(), other_station, "nginx-2");
  ASSERT_TRUE(theirs.status.ok()) << theirs.status.error_message();
  EXPECT_FALSE(theirs.response.replayed());
}

// Without tls.trusted_proxies the server believes no header: nginx's calls are refused, not taken as nginx's
// own identity or the station's.
TEST_F(NginxTest, ServerWithoutTrustedProxiesRefusesWhatNginxForwards) {
  StartServer();
  const std::string lb = StartNginx();
  Signed through = SignThroughUntilUp(lb, "nginx-3");
  EXPECT_EQ(through.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(through.status.error_message(), HasSubstr("no trusted proxy is configured"));
}

// Straight to the server: a station's header is refused, and the proxy's own certificate is not a station's.
TEST_F(LoadBalancerTest, ForwardedHeaderIsRefusedFromAnyoneButATrustedProxy) {
  config_.mutable_tls()->add_trusted_proxies("edge-proxy");
  StartServer();
  auto other_station = ca_->StationCredentials("line1-st1");
  Signed forged = Sign(server_->address(), station_, "direct-1", UrlEscape(other_station.certificate_pem));
  EXPECT_EQ(forged.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(forged.status.error_message(), HasSubstr("'station-1', which is not a trusted proxy"));
  auto proxy = ca_->StationCredentials("edge-proxy");
  Signed bare = Sign(server_->address(), proxy, "direct-2");
  EXPECT_EQ(bare.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(bare.status.error_message(), HasSubstr("forwarded no station certificate"));
  Signed proxied_proxy = Sign(server_->address(), proxy, "direct-3", UrlEscape(proxy.certificate_pem));
  EXPECT_EQ(proxied_proxy.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(proxied_proxy.status.error_message(), HasSubstr("proxies are not stations"));
  // Neither refusal recorded anything: station-1's own first use of direct-1 is a new certificate.
  Signed own = Sign(server_->address(), station_, "direct-1");
  ASSERT_TRUE(own.status.ok()) << own.status.error_message();
  EXPECT_FALSE(own.response.replayed());
  server_->Stop(SIGTERM);
}

}  // namespace
}  // namespace linesign
