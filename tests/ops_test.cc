// Operations, end to end against the real server binary, SoftHSM2 and SQLite: the HTTP listener (metrics checked
// by Debian's promtool, liveness and readiness as load balancers ask, the same mTLS as gRPC), a real Prometheus
// scraping the server under load, and a backup taken while serving, restored and served from.
#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/openssl_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "linesign/v1/ca.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "server/config/config.h"
#include "tests/testing/certs.h"
#include "tests/testing/db_write_lock.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_ca.h"

namespace linesign {
namespace {

using ::testing::HasSubstr;
using testing::ServerProcess;
using testing::TestCa;

constexpr absl::Duration kPatience = absl::Seconds(60);

struct HostPort {
  std::string host;
  int port = 0;
};
HostPort Split(const std::string& address) {
  HostPort hp;
  const auto colon = address.rfind(':');
  hp.host = address.substr(0, colon);
  EXPECT_TRUE(absl::SimpleAtoi(address.substr(colon + 1), &hp.port)) << address;
  return hp;
}

struct Got {
  int status = 0;  // 0: no answer
  std::string body;
};
Got HttpGet(const std::string& address, const std::string& path) {
  HostPort hp = Split(address);
  httplib::Client c(hp.host, hp.port);
  c.set_read_timeout(30, 0);
  auto r = c.Get(path.c_str());
  if (!r) return {};
  return {r->status, r->body};
}

// WriteFileOrDie writes `content` to `path` with `mode`.
void Write(const std::string& path, const std::string& content, mode_t mode = 0600) {
  ASSERT_TRUE(WriteFile(path, content, mode).ok()) << path;
}

// TlsDir writes a --tls-dir for `identity` (ca.pem: the station CA, which also issued the server's certificate).
std::string TlsDir(const TestCa& ca, const std::string& identity) {
  const std::string dir = testing::TempDir("tls-" + identity);
  auto creds = ca.StationCredentials(identity);
  Write(dir + "/ca.pem", ca.station_ca.certificate_pem, 0644);
  Write(dir + "/cert.pem", creds.certificate_pem, 0644);
  Write(dir + "/key.pem", creds.key_pem);
  return dir;
}

// Bench runs linesign-bench and returns its JSON summary (empty on failure).
nlohmann::json Bench(const std::string& address, const std::string& tls_dir, std::vector<std::string> extra) {
  std::vector<std::string> argv = {LINESIGN_BENCH_BINARY, "--server", address, "--tls-dir", tls_dir, "--json"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto r = testing::RunCommand(argv, 120);
  std::vector<std::string> lines = absl::StrSplit(r.output, '\n', absl::SkipEmpty());
  for (auto it = lines.rbegin(); it != lines.rend(); ++it) {
    if (!it->empty() && (*it)[0] == '{') return nlohmann::json::parse(*it, nullptr, false);
  }
  ADD_FAILURE() << "linesign-bench printed no summary: " << r.output;
  return {};
}

// Promtool runs `promtool check WHAT FILE`-style commands through a shell (metrics are read from stdin).
testing::ExitResult Shell(const std::string& command) { return testing::RunCommand({"/bin/sh", "-c", command}, 60); }

class OpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = TestCa::Create("ec-p256");
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = std::make_unique<TestCa>(*ca);
    db_ = ca_->dir + "/linesign.db";
    config_ = ca_->Config(db_);
    config_.set_health_check_interval_ms(100);
  }
  void StartServer() {
    auto server = ServerProcess::Start({"--config", testing::WriteConfig(ca_->dir, config::ToYaml(config_))});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_FALSE(server_->http_address().empty()) << "no 'linesign-server http on' line";
  }
  std::string Stop() {
    auto r = server_->Stop(SIGTERM);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return r.output;
  }

  std::unique_ptr<TestCa> ca_;
  std::string db_;
  v1::ServerConfig config_;
  std::unique_ptr<ServerProcess> server_;
};

// /metrics after certificates were issued and a station was refused: every series the issue asks for is there,
// with the right counts, and promtool (the Prometheus project's own linter) has nothing to say about the output.
// Before the HTTP listener there was no /metrics at all.
TEST_F(OpsTest, MetricsCountIssuesAndRefusalsAndPassPromtool) {
  StartServer();
  auto ok = Bench(server_->address(), TlsDir(*ca_, "station-1"), {"--mode", "unary", "--count", "25"});
  EXPECT_EQ(ok.value("certificates", 0), 25) << ok.dump();
  // No access rule matches "intruder": refused, counted by code and reason class.
  {
    auto intruder = v1::CertificateAuthority::NewStub(ca_->Channel(server_->address(), "intruder"));
    v1::SignCsrRequest req;
    req.set_csr_der(testing::Csr("ec-p256", "/CN=INTRUDER"));
    req.set_request_id("intruder-1");
    v1::SignCsrResponse resp;
    grpc::ClientContext ctx;
    EXPECT_EQ(intruder->SignCsr(&ctx, req, &resp).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }

  Got m = HttpGet(server_->http_address(), "/metrics");
  ASSERT_EQ(m.status, 200) << m.body;
  EXPECT_THAT(m.body, HasSubstr("linesign_certificates_issued_total{profile=\"device\",station=\"station-1\"} 25\n"));
  EXPECT_THAT(m.body, HasSubstr("linesign_refusals_total{rpc=\"SignCsr\",code=\"PERMISSION_DENIED\","
                                "reason=\"authorization\"} 1\n"));
  EXPECT_THAT(m.body, HasSubstr("linesign_sign_request_duration_seconds_count{path=\"unary\"} 25\n"));
  EXPECT_THAT(m.body, HasSubstr("linesign_hsm_sign_duration_seconds_count"));
  EXPECT_THAT(m.body, HasSubstr("linesign_store_commit_duration_seconds_bucket{le=\"+Inf\"}"));
  EXPECT_THAT(m.body, HasSubstr("linesign_batch_size_certificates_sum 25\n"));
  EXPECT_THAT(m.body, HasSubstr("linesign_signing_queue_depth 0\n"));
  EXPECT_THAT(m.body, HasSubstr("linesign_rpc_answers_total{rpc=\"SignCsr\",code=\"OK\"} 25\n"));
  EXPECT_THAT(m.body, HasSubstr("linesign_serving 1\n"));
  EXPECT_THAT(m.body, HasSubstr("linesign_build_info{version="));
  EXPECT_THAT(m.body, HasSubstr("process_resident_memory_bytes "));

  const std::string file = ca_->dir + "/metrics.txt";
  Write(file, m.body);
  auto lint = Shell(absl::StrCat("promtool check metrics < ", file));
  EXPECT_EQ(lint.exit_code, 0) << lint.output;
  EXPECT_EQ(lint.output, "") << "promtool check metrics complains:\n" << lint.output;
  Stop();
}

// Readiness follows the health monitor: the database locked by another process past the store's ping timeout is
// 503 with the reason, liveness stays 200, and readiness comes back once the lock is gone.
// The CRL is served over plain HTTP at crl.http_path (what a profile's CRL distribution point names): the same
// DER GetCrl returns, as application/pkix-crl; its age, time to nextUpdate and number are metrics.
TEST_F(OpsTest, TheCrlIsServedOverHttpWithItsAgeAsAMetric) {
  config_.mutable_crl()->set_http_path("/pki/linesign.crl");
  StartServer();
  v1::GetCrlResponse crl;
  auto station = v1::CertificateAuthority::NewStub(ca_->Channel(server_->address(), "station-1"));
  grpc::ClientContext ctx;
  ASSERT_TRUE(station->GetCrl(&ctx, {}, &crl).ok());
  HostPort hp = Split(server_->http_address());
  httplib::Client c(hp.host, hp.port);
  auto r = c.Get("/pki/linesign.crl");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/pkix-crl");
  EXPECT_EQ(r->body, crl.crl_der());
  EXPECT_EQ(HttpGet(server_->http_address(), "/linesign.crl").status, 404);  // only the configured path

  Got m = HttpGet(server_->http_address(), "/metrics");
  ASSERT_EQ(m.status, 200);
  EXPECT_THAT(m.body, HasSubstr(absl::StrCat("\nlinesign_crl_number ", crl.crl_number(), "\n")));
  EXPECT_THAT(m.body, HasSubstr("\nlinesign_crl_age_seconds "));
  EXPECT_THAT(m.body, HasSubstr("\nlinesign_crl_next_update_seconds "));
}

TEST_F(OpsTest, ReadyzIs503WithTheReasonWhileTheStoreIsUnusable) {
  StartServer();
  EXPECT_EQ(HttpGet(server_->http_address(), "/healthz").status, 200);
  Got ready = HttpGet(server_->http_address(), "/readyz");
  EXPECT_EQ(ready.status, 200) << ready.body;
  testing::DbWriteLock lock(db_);
  ASSERT_TRUE(lock.held());
  Got got;
  for (absl::Time deadline = absl::Now() + kPatience; absl::Now() < deadline; absl::SleepFor(absl::Milliseconds(50))) {
    got = HttpGet(server_->http_address(), "/readyz");
    if (got.status == 503) break;
  }
  EXPECT_EQ(got.status, 503);
  EXPECT_EQ(got.body, "not ready: store: ping: database is locked\n");
  EXPECT_EQ(HttpGet(server_->http_address(), "/healthz").status, 200);
  lock.Release();
  for (absl::Time deadline = absl::Now() + kPatience; absl::Now() < deadline; absl::SleepFor(absl::Milliseconds(50))) {
    got = HttpGet(server_->http_address(), "/readyz");
    if (got.status == 200) break;
  }
  EXPECT_EQ(got.status, 200) << got.body;
  Stop();
}

// http.tls: same-as-grpc with require_client_certificate: HTTPS with the gRPC certificate, and a request without
// a client certificate, or with one the station CA did not issue, is 401 with the authenticator's reason.
TEST_F(OpsTest, HttpCanRequireTheSameClientCertificatesAsGrpc) {
  config_.mutable_http()->set_tls("same-as-grpc");
  config_.mutable_http()->set_require_client_certificate(true);
  StartServer();
  HostPort hp = Split(server_->http_address());
  const std::string station = TlsDir(*ca_, "station-1");
  {
    httplib::SSLClient c(hp.host, hp.port);
    c.set_ca_cert_path((station + "/ca.pem").c_str());
    c.enable_server_certificate_verification(true);
    auto r = c.Get("/readyz");
    ASSERT_TRUE(r) << "HTTPS to " << server_->http_address() << " failed: " << httplib::to_string(r.error());
    EXPECT_EQ(r->status, 401);
    EXPECT_THAT(r->body, HasSubstr("no client certificate"));
  }
  {
    httplib::SSLClient c(hp.host, hp.port, station + "/cert.pem", station + "/key.pem");
    c.set_ca_cert_path((station + "/ca.pem").c_str());
    c.enable_server_certificate_verification(true);
    auto r = c.Get("/readyz");
    ASSERT_TRUE(r) << httplib::to_string(r.error());
    EXPECT_EQ(r->status, 200) << r->body;
  }
  {
    // A client certificate from a CA of its own: the handshake succeeds, the request does not.
    auto other = tls::MakeTlsCa("stranger CA", absl::Now() - absl::Hours(1), absl::Now() + absl::Hours(24));
    ASSERT_TRUE(other.ok());
    const std::string dir = testing::TempDir("stranger");
    Write(dir + "/cert.pem", other->certificate_pem, 0644);
    Write(dir + "/key.pem", other->key_pem);
    httplib::SSLClient c(hp.host, hp.port, dir + "/cert.pem", dir + "/key.pem");
    c.enable_server_certificate_verification(false);
    auto r = c.Get("/metrics");
    ASSERT_TRUE(r) << httplib::to_string(r.error());
    EXPECT_EQ(r->status, 401);
    EXPECT_THAT(r->body, HasSubstr("not issued by a trusted station CA"));
  }
  Stop();
}

// PromQuery asks a running Prometheus (HTTP API) for an instant vector at `time` and returns the sum of its
// values, or nullopt when it has no result.
std::optional<double> PromQuery(int port, const std::string& query, double time) {
  httplib::Client c("127.0.0.1", port);
  httplib::Params params = {{"query", query}, {"time", absl::StrFormat("%.3f", time)}};
  auto r = c.Post("/api/v1/query", params);
  if (!r || r->status != 200) return std::nullopt;
  auto j = nlohmann::json::parse(r->body, nullptr, false);
  if (j.is_discarded() || j["status"] != "success") return std::nullopt;
  const auto& result = j["data"]["result"];
  if (!result.is_array() || result.empty()) return std::nullopt;
  double sum = 0;
  for (const auto& sample : result) {
    double v = 0;
    if (!absl::SimpleAtod(sample["value"][1].get<std::string>(), &v)) return std::nullopt;
    sum += v;
  }
  return sum;
}

// Debian's Prometheus scrapes the server every second while linesign-bench issues certificates; then Prometheus's
// own HTTP API says the rate was positive and that the increase of linesign_certificates_issued_total over the
// run is the number of certificates linesign-bench received, within 2 %.
TEST_F(OpsTest, RealPrometheusScrapeMatchesTheLoadGeneratorsCount) {
  StartServer();
  const std::string station = TlsDir(*ca_, "station-1");
  // One certificate first, so the series exists (at 1) before the load: increase() then needs no guess at its
  // start.
  ASSERT_EQ(Bench(server_->address(), station, {"--mode", "unary", "--count", "1"}).value("certificates", 0), 1);

  const std::string dir = testing::TempDir("prometheus");
  Write(dir + "/prometheus.yml",
        absl::StrCat("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                     "scrape_configs:\n"
                     "  - job_name: linesign\n"
                     "    static_configs: [{targets: ['", server_->http_address(), "']}]\n"),
        0644);
  const int port = testing::FreeLoopbackPort();
  ASSERT_GT(port, 0);
  // The Debian binary, which CI installs (scripts/install-deps.sh): a missing one fails here, never skips.
  ASSERT_EQ(access("/usr/bin/prometheus", X_OK), 0) << "/usr/bin/prometheus is missing: install package prometheus";
  testing::ChildProcess prom({"/usr/bin/prometheus", absl::StrCat("--config.file=", dir, "/prometheus.yml"),
              absl::StrCat("--storage.tsdb.path=", dir, "/data"),
              absl::StrCat("--web.listen-address=127.0.0.1:", port), "--log.level=warn"},
             dir + "/prometheus.log");
  ASSERT_TRUE(prom.started());

  auto now = [] { return static_cast<double>(absl::ToUnixMillis(absl::Now())) / 1000.0; };
  // Until Prometheus has scraped the first certificate.
  std::optional<double> first;
  for (absl::Time deadline = absl::Now() + kPatience; absl::Now() < deadline && first != 1.0;
       absl::SleepFor(absl::Milliseconds(200))) {
    first = PromQuery(port, "sum(linesign_certificates_issued_total)", now());
  }
  ASSERT_EQ(first, 1.0) << "Prometheus never scraped the first certificate; its log: "
                         << ReadFile(dir + "/prometheus.log").value_or("(none)");

  auto load = Bench(server_->address(), station, {"--mode", "stream", "--concurrency", "2", "--duration", "5"});
  const int issued = load.value("certificates", 0);
  ASSERT_GT(issued, 0) << load.dump();
  EXPECT_EQ(load.value("errors", -1), 0) << load.dump();

  // Until Prometheus has the final count; then ask at the time of its last sample (no extrapolation past it).
  std::optional<double> last;
  for (absl::Time deadline = absl::Now() + kPatience; absl::Now() < deadline && last != 1.0 + issued;
       absl::SleepFor(absl::Milliseconds(200))) {
    last = PromQuery(port, "sum(linesign_certificates_issued_total)", now());
  }
  ASSERT_EQ(last, 1.0 + issued);
  auto at = PromQuery(port, "max(timestamp(linesign_certificates_issued_total))", now());
  ASSERT_TRUE(at.has_value());
  auto rate = PromQuery(port, "sum(rate(linesign_certificates_issued_total[30s]))", *at);
  ASSERT_TRUE(rate.has_value());
  EXPECT_GT(*rate, 0);
  auto increase = PromQuery(port, "sum(increase(linesign_certificates_issued_total[1m]))", *at);
  ASSERT_TRUE(increase.has_value());
  EXPECT_NEAR(*increase, issued, issued * 0.02) << "rate[30s] was " << *rate;
  std::cout << "linesign-bench received " << issued << " certificates; Prometheus: increase[1m] " << *increase
            << ", rate[30s] " << *rate << "/s" << std::endl;
  Stop();
}

// The status page in Debian's headless Chromium while linesign-bench issues certificates: it loads with no console
// errors, its chart moves, a station that was refused appears in the station table with its refusal, and a
// screenshot is saved under the build tree (build/tests/status_page.png).
TEST_F(OpsTest, StatusPageInChromiumMovesUnderLoadAndShowsARefusedStation) {
  StartServer();
  {
    auto intruder = v1::CertificateAuthority::NewStub(ca_->Channel(server_->address(), "intruder"));
    v1::SignCsrRequest req;
    req.set_csr_der(testing::Csr("ec-p256", "/CN=INTRUDER"));
    req.set_request_id("intruder-1");
    v1::SignCsrResponse resp;
    grpc::ClientContext ctx;
    EXPECT_EQ(intruder->SignCsr(&ctx, req, &resp).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  const std::string station = TlsDir(*ca_, "station-1");
  std::thread load([&] {
    Bench(server_->address(), station, {"--mode", "stream", "--concurrency", "2", "--duration", "12"});
  });
  const std::string screenshot = std::string(LINESIGN_TEST_OUTPUT_DIR) + "/status_page.png";
  auto check = testing::RunCommand({"/usr/bin/python3", testing::SourceDir() + "/tests/status_page_check.py",
                                    absl::StrCat("http://", server_->http_address(), "/status"), screenshot,
                                    "intruder"},
                                   90);
  load.join();
  EXPECT_EQ(check.exit_code, 0) << check.output;
  std::cout << check.output;
  struct stat st;
  EXPECT_EQ(stat(screenshot.c_str(), &st), 0) << screenshot;
  Stop();
}

// A backup taken with `linesign-server backup` while the server issues certificates, restored into a fresh data
// directory and served: a station's replay of a recorded request id gets the ORIGINAL certificate, and new
// certificates never take a serial the backup holds.
TEST_F(OpsTest, BackupWhileServingRestoresToAServerThatReplaysAndNeverReusesASerial) {
  StartServer();
  const std::string config_path = testing::WriteConfig(ca_->dir, config::ToYaml(config_));
  auto stub = v1::CertificateAuthority::NewStub(ca_->Channel(server_->address()));
  std::vector<std::string> csrs;
  std::vector<v1::SignCsrResponse> originals;
  for (int i = 0; i < 5; ++i) {
    csrs.push_back(testing::Csr("ec-p256", absl::StrCat("/CN=BACKUP", i)));
    v1::SignCsrRequest req;
    req.set_csr_der(csrs.back());
    req.set_request_id(absl::StrCat("backup-", i));
    v1::SignCsrResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->SignCsr(&ctx, req, &resp).ok());
    originals.push_back(resp);
  }
  // Load while the backup is taken.
  const std::string station = TlsDir(*ca_, "station-1");
  std::thread load([&] { Bench(server_->address(), station, {"--mode", "stream", "--duration", "3"}); });
  absl::SleepFor(absl::Seconds(1));
  const std::string backup = ca_->dir + "/backup.db";
  auto r = testing::RunCommand({testing::ServerBinary(), "backup", "--config", config_path, "--out", backup});
  load.join();
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("written to " + backup));
  struct stat st;
  ASSERT_EQ(stat(backup.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // Never over an existing file.
  auto again = testing::RunCommand({testing::ServerBinary(), "backup", "--config", config_path, "--out", backup});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_THAT(again.output, HasSubstr("exists; a backup never overwrites a file"));
  Stop();

  std::set<std::string> recorded;
  for (const auto& [serial, _] : testing::SqliteMap(backup, "SELECT serial, 1 FROM certificates")) recorded.insert(serial);
  ASSERT_GE(recorded.size(), 5u);

  // Restore: the backup becomes the database of a fresh data directory.
  const std::string fresh = testing::TempDir("restored");
  std::filesystem::copy_file(backup, fresh + "/linesign.db");
  config_.mutable_store()->mutable_sqlite()->set_path(fresh + "/linesign.db");
  StartServer();
  stub = v1::CertificateAuthority::NewStub(ca_->Channel(server_->address()));
  for (int i = 0; i < 5; ++i) {
    v1::SignCsrRequest req;
    req.set_csr_der(csrs[i]);
    req.set_request_id(absl::StrCat("backup-", i));
    v1::SignCsrResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->SignCsr(&ctx, req, &resp).ok());
    EXPECT_TRUE(resp.replayed());
    EXPECT_EQ(resp.serial_hex(), originals[i].serial_hex());
    EXPECT_EQ(resp.certificate_der(), originals[i].certificate_der());
  }
  auto more = Bench(server_->address(), station, {"--mode", "stream", "--count", "300"});
  EXPECT_EQ(more.value("certificates", 0), 300);
  Stop();
  const auto after = testing::SqliteMap(fresh + "/linesign.db", "SELECT serial, 1 FROM certificates");
  EXPECT_EQ(after.size(), recorded.size() + 300);
  for (const auto& serial : recorded) EXPECT_TRUE(after.contains(serial)) << serial;
}

// deploy/systemd/linesign.service passes `systemd-analyze verify` (with ExecStart pointed at the built binary: the
// unit names the installed path) and `systemd-analyze security --offline=true` rates it OK or better (exposure at
// most 4.9). Works without systemd as PID 1 (containers, CI).
TEST(DeployTest, SystemdUnitVerifiesAndIsRatedOk) {
  ASSERT_EQ(access("/usr/bin/systemd-analyze", X_OK), 0) << "systemd-analyze is missing: install package systemd";
  auto unit = ReadFile(testing::SourceDir() + "/deploy/systemd/linesign.service");
  ASSERT_TRUE(unit.ok()) << unit.status();
  std::string text = *unit;
  const std::string installed = "/usr/local/bin/linesign-server";
  ASSERT_NE(text.find(installed), std::string::npos);
  text.replace(text.find(installed), installed.size(), testing::ServerBinary());
  const std::string dir = testing::TempDir("systemd");
  Write(dir + "/linesign.service", text, 0644);
  auto verify = Shell(absl::StrCat("cd ", dir, " && SYSTEMD_LOG_LEVEL=warning systemd-analyze verify ", dir,
                                   "/linesign.service"));
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
  EXPECT_EQ(verify.output, "") << verify.output;
  auto security = Shell(absl::StrCat("systemd-analyze security --offline=true --no-pager ", dir, "/linesign.service"));
  EXPECT_EQ(security.exit_code, 0) << security.output;
  const std::string marker = "Overall exposure level for linesign.service: ";
  const size_t at = security.output.find(marker);
  ASSERT_NE(at, std::string::npos) << security.output;
  double exposure = 99;
  std::string rest = security.output.substr(at + marker.size());
  ASSERT_TRUE(absl::SimpleAtod(rest.substr(0, rest.find(' ')), &exposure)) << rest;
  EXPECT_LE(exposure, 4.9) << rest;  // systemd: < 5 is "OK", < 3 "SAFE" (this unit: 1.2)
  EXPECT_THAT(rest, ::testing::AnyOf(HasSubstr(" OK"), HasSubstr(" SAFE"))) << rest;
  std::cout << marker << rest.substr(0, rest.find('\n')) << std::endl;
}

// The suggested alert rules parse and type-check (`promtool check rules`).
TEST(DeployTest, AlertRulesPassPromtool) {
  auto check = Shell(absl::StrCat("promtool check rules ", testing::SourceDir(), "/deploy/prometheus/linesign.rules.yml"));
  EXPECT_EQ(check.exit_code, 0) << check.output;
  EXPECT_THAT(check.output, HasSubstr("SUCCESS"));
}

}  // namespace
}  // namespace linesign
