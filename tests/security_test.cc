// Stations are who they say they are: the real server with mTLS, a CRL, access rules and an audit file. Each
// refusal is checked for its code and message, that it was counted (GetStats, as an administrator), audited,
// and that nothing was recorded.
#include <grpcpp/grpcpp.h>

#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <thread>

#include <future>

#include <grpcpp/generic/generic_stub.h>

#include "absl/strings/str_cat.h"
#include "client/keygen.h"
#include "common/openssl_util.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "linesign/v1/admin.grpc.pb.h"
#include "linesign/v1/ca.grpc.pb.h"
#include "server/auth/station_credential.h"
#include "nlohmann/json.hpp"
#include "server/config/config.h"
#include "server/tls/tls_pki.h"
#include "tests/testing/certs.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_ca.h"

namespace linesign {
namespace {

using ::testing::HasSubstr;
using testing::ServerProcess;
using testing::TestCa;
using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// HealthCheck calls grpc.health.v1.Health/Check for `service` on `channel`.
grpc::Status HealthCheck(const std::shared_ptr<grpc::Channel>& channel, HealthCheckResponse* response,
                         const std::string& service = "") {
  HealthCheckRequest req;
  req.set_service(service);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  return Health::NewStub(channel)->Check(&ctx, req, response);
}

// ReflectionListServices calls the reflection service (ServerReflectionInfo, with one list_services request) as a
// unary call on the raw method path, so the test needs no reflection client: UNIMPLEMENTED when it is not served.
grpc::Status ReflectionListServices(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  const char kListServices[] = {0x3a, 0x00};  // ServerReflectionRequest{list_services: ""}
  grpc::Slice slice(kListServices, sizeof(kListServices));
  grpc::ByteBuffer request(&slice, 1), response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", grpc::StubOptions(),
                 &request, &response, [&done](grpc::Status st) { done.set_value(st); });
  return done.get_future().get();
}

class SecurityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto ca = TestCa::Create("ec-p256");
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = new TestCa(*ca);
    revoked_ = new tls::KeyAndCertificate(ca_->StationCredentials("station-1"));
    auto serial = tls::SerialHex(revoked_->certificate_pem);
    ASSERT_TRUE(serial.ok());
    auto crl = tls::MakeCrl(ca_->station_ca, {*serial}, absl::Now() - absl::Minutes(1));
    ASSERT_TRUE(crl.ok()) << crl.status();
    ASSERT_TRUE(WriteFile(ca_->dir + "/tls/station-ca.crl", *crl).ok());

    v1::ServerConfig config = ca_->Config(ca_->dir + "/linesign.db");
    config.mutable_tls()->add_crl_files(ca_->dir + "/tls/station-ca.crl");
    config.mutable_audit()->set_file(ca_->dir + "/audit.jsonl");
    v1::AccessRule* limited = config.add_access();
    limited->set_identity("limited");
    limited->add_profiles("device");
    limited->set_rate_per_second(0.01);
    limited->set_burst(2);
    std::string path = testing::WriteConfig(ca_->dir, config::ToYaml(config));
    auto server = ServerProcess::Start({"--config", path});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
  }
  static void TearDownTestSuite() {
    if (server_ != nullptr) {
      auto r = server_->Stop(SIGTERM);
      EXPECT_EQ(r.exit_code, 0) << r.output;
      delete server_;
    }
    delete revoked_;
    delete ca_;
  }

  static std::unique_ptr<v1::CertificateAuthority::Stub> Stub(const std::string& identity) {
    return v1::CertificateAuthority::NewStub(ca_->Channel(server_->address(), identity));
  }
  static std::unique_ptr<v1::Administration::Stub> AdminStub(const std::string& identity) {
    return v1::Administration::NewStub(ca_->Channel(server_->address(), identity));
  }
  static std::unique_ptr<v1::CertificateAuthority::Stub> StubWith(const tls::KeyAndCertificate& client) {
    return v1::CertificateAuthority::NewStub(ca_->ChannelWith(server_->address(), client));
  }
  static grpc::Status Sign(v1::CertificateAuthority::Stub* stub, const std::string& request_id,
                           const std::string& profile = "", v1::SignCsrResponse* resp = nullptr) {
    v1::SignCsrRequest req;
    req.set_csr_der(testing::Csr("ec-p256", "/CN=DEVICE" + request_id));
    req.set_request_id(request_id);
    req.set_profile(profile);
    v1::SignCsrResponse ignored;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return stub->SignCsr(&ctx, req, resp != nullptr ? resp : &ignored);
  }
  static v1::GetStatsResponse Stats() {
    v1::GetStatsResponse resp;
    grpc::ClientContext ctx;
    grpc::Status st = AdminStub("admin")->GetStats(&ctx, {}, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp;
  }
  static uint64_t Answers(const v1::GetStatsResponse& s, const std::string& key) {
    auto it = s.answers().find(key);
    return it == s.answers().end() ? 0 : it->second;
  }
  // AuditLines returns the audit entries whose request_id is `id`.
  static std::vector<nlohmann::json> AuditLines(const std::string& id) {
    std::vector<nlohmann::json> out;
    std::ifstream in(ca_->dir + "/audit.jsonl");
    for (std::string line; std::getline(in, line);) {
      auto j = nlohmann::json::parse(line);
      if (j.value("request_id", "") == id) out.push_back(j);
    }
    return out;
  }

  // ExpectRefused signs as `stub` and checks code, message, the counter, the audit entry and the store.
  static void ExpectRefused(v1::CertificateAuthority::Stub* stub, const std::string& request_id,
                            const std::string& profile, grpc::StatusCode code, const std::string& message) {
    v1::GetStatsResponse before = Stats();
    grpc::Status st = Sign(stub, request_id, profile);
    EXPECT_EQ(st.error_code(), code) << st.error_message();
    EXPECT_THAT(st.error_message(), HasSubstr(message));
    v1::GetStatsResponse after = Stats();
    std::string key = absl::StrCat("SignCsr ", StatusCodeName(code));
    EXPECT_EQ(Answers(after, key), Answers(before, key) + 1) << key;
    EXPECT_EQ(after.certificates_recorded(), before.certificates_recorded());
    auto audit = AuditLines(request_id);
    ASSERT_EQ(audit.size(), 1u) << request_id;
    EXPECT_EQ(audit[0]["outcome"], "refused");
    EXPECT_EQ(audit[0]["code"], StatusCodeName(code));
    EXPECT_THAT(audit[0]["reason"].get<std::string>(), HasSubstr(message));
    EXPECT_THAT(audit[0]["peer"].get<std::string>(), HasSubstr("127.0.0.1"));
  }

  static TestCa* ca_;
  static tls::KeyAndCertificate* revoked_;
  static ServerProcess* server_;
};
TestCa* SecurityTest::ca_ = nullptr;
tls::KeyAndCertificate* SecurityTest::revoked_ = nullptr;
ServerProcess* SecurityTest::server_ = nullptr;

TEST_F(SecurityTest, NoClientCertificateIsUnauthenticated) {
  ExpectRefused(StubWith({}).get(), "no-cert-1", "", grpc::StatusCode::UNAUTHENTICATED,
                "no client certificate: every RPC needs a station certificate (mTLS)");
}

TEST_F(SecurityTest, CertificateFromAnotherCaIsUnauthenticated) {
  auto rogue = tls::MakeTlsCa("rogue CA", absl::Now() - absl::Hours(1), absl::Now() + absl::Hours(24));
  ASSERT_TRUE(rogue.ok());
  auto cert = tls::IssueLeaf(*rogue, {.common_name = "station-1", .not_before = absl::Now() - absl::Hours(1),
                                      .not_after = absl::Now() + absl::Hours(1)});
  ASSERT_TRUE(cert.ok());
  ExpectRefused(StubWith(*cert).get(), "rogue-1", "", grpc::StatusCode::UNAUTHENTICATED,
                "client certificate 'CN=station-1' is not issued by a trusted station CA");
}

TEST_F(SecurityTest, ExpiredStationCertificateIsUnauthenticated) {
  auto expired = ca_->StationCredentials("station-1", {.not_before = absl::Now() - absl::Hours(48),
                                                       .not_after = absl::Now() - absl::Hours(24)});
  ExpectRefused(StubWith(expired).get(), "expired-1", "", grpc::StatusCode::UNAUTHENTICATED,
                "client certificate 'CN=station-1' expired at");
}

TEST_F(SecurityTest, RevokedStationCertificateIsUnauthenticated) {
  auto serial = tls::SerialHex(revoked_->certificate_pem);
  ExpectRefused(StubWith(*revoked_).get(), "revoked-1", "", grpc::StatusCode::UNAUTHENTICATED,
                absl::StrCat("client certificate 'CN=station-1' (serial ", *serial, ") is revoked"));
  // The same identity with a certificate that is not revoked still works.
  EXPECT_TRUE(Sign(Stub("station-1").get(), "revoked-control-1").ok());
}

TEST_F(SecurityTest, UnknownIdentityMayDoNothing) {
  ExpectRefused(Stub("intruder").get(), "intruder-1", "", grpc::StatusCode::PERMISSION_DENIED,
                "identity 'intruder' may not call SignCsr: no access rule matches it");
  v1::GetCaChainResponse chain;
  grpc::ClientContext ctx;
  EXPECT_EQ(Stub("intruder")->GetCaChain(&ctx, {}, &chain).error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

// Done-when: a station certificate for one profile cannot obtain another profile's certificate.
TEST_F(SecurityTest, StationMayUseOnlyItsProfiles) {
  auto line = Stub("line3-st7");
  ExpectRefused(line.get(), "line-server-1", "server", grpc::StatusCode::PERMISSION_DENIED,
                "station 'line3-st7' may not use profile 'server' (allowed: device)");
  v1::SignCsrResponse resp;
  ASSERT_TRUE(Sign(line.get(), "line-device-1", "device", &resp).ok());
  auto audit = AuditLines("line-device-1");
  ASSERT_EQ(audit.size(), 1u);
  EXPECT_EQ(audit[0]["outcome"], "issued");
  EXPECT_EQ(audit[0]["identity"], "line3-st7");
  EXPECT_EQ(audit[0]["profile"], "device");
  EXPECT_EQ(audit[0]["serial"], resp.serial_hex());
  EXPECT_EQ(audit[0]["subject"], "CN=DEVICEline-device-1");
  // station-1 is allowed both.
  EXPECT_TRUE(Sign(Stub("station-1").get(), "station1-server-1", "server").ok());
}

TEST_F(SecurityTest, RateLimitPerStation) {
  auto limited = Stub("limited");
  EXPECT_TRUE(Sign(limited.get(), "limited-1").ok());
  EXPECT_TRUE(Sign(limited.get(), "limited-2").ok());
  ExpectRefused(limited.get(), "limited-3", "", grpc::StatusCode::RESOURCE_EXHAUSTED,
                "station 'limited' exceeded its rate limit");
  EXPECT_TRUE(Sign(Stub("station-1").get(), "not-limited-1").ok());  // others are unaffected
}

TEST_F(SecurityTest, AdministratorRpcsAreForAdministratorsOnly) {
  v1::SignCsrResponse issued;
  ASSERT_TRUE(Sign(Stub("station-1").get(), "admin-lookup-1", "", &issued).ok());
  v1::GetCertificateRequest req;
  req.set_serial_hex(issued.serial_hex());
  v1::GetCertificateResponse resp;
  {
    grpc::ClientContext ctx;
    grpc::Status st = AdminStub("station-1")->GetCertificate(&ctx, req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_THAT(st.error_message(), HasSubstr("identity 'station-1' may not call GetCertificate: administrators only"));
  }
  {
    grpc::ClientContext ctx;
    grpc::Status st = AdminStub("admin")->GetCertificate(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(resp.certificate_der(), issued.certificate_der());
    EXPECT_EQ(resp.station(), "station-1");
    EXPECT_EQ(resp.request_id(), "admin-lookup-1");
  }
  {
    req.set_serial_hex("7F");
    grpc::ClientContext ctx;
    EXPECT_EQ(AdminStub("admin")->GetCertificate(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    v1::GetStatsResponse stats;
    EXPECT_EQ(AdminStub("station-1")->GetStats(&ctx, {}, &stats).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  // An administrator is not a station.
  EXPECT_EQ(Sign(Stub("admin").get(), "admin-sign-1").error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(SecurityTest, UnauthenticatedStreamIsClosedWithTheReason) {
  auto stub = StubWith({});
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto stream = stub->SignCsrStream(&ctx);
  v1::SignCsrRequest req;
  req.set_csr_der(testing::Csr("ec-p256", "/CN=STREAMDEVICE"));
  req.set_request_id("stream-no-cert-1");
  stream->Write(req);
  stream->WritesDone();
  v1::SignCsrStreamResponse resp;
  EXPECT_FALSE(stream->Read(&resp));
  grpc::Status st = stream->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(st.error_message(), HasSubstr("no client certificate"));
}

// Health answers only a caller with a client certificate the authenticator accepts (hardening item 8).
TEST_F(SecurityTest, HealthNeedsAClientCertificate) {
  HealthCheckResponse resp;
  grpc::Status st = HealthCheck(ca_->ChannelWith(server_->address(), {}), &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << st.error_message();
  EXPECT_THAT(st.error_message(), HasSubstr("no client certificate"));
  auto rogue = tls::MakeTlsCa("rogue CA", absl::Now() - absl::Hours(1), absl::Now() + absl::Hours(24));
  ASSERT_TRUE(rogue.ok());
  auto cert = tls::IssueLeaf(*rogue, {.common_name = "station-1", .not_before = absl::Now() - absl::Hours(1),
                                      .not_after = absl::Now() + absl::Hours(1)});
  ASSERT_TRUE(cert.ok());
  st = HealthCheck(ca_->ChannelWith(server_->address(), *cert), &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << st.error_message();
  EXPECT_THAT(st.error_message(), HasSubstr("is not issued by a trusted station CA"));

  // Any authenticated identity, even one no access rule names.
  for (const char* who : {"station-1", "intruder"}) {
    st = HealthCheck(ca_->Channel(server_->address(), who), &resp);
    ASSERT_TRUE(st.ok()) << who << ": " << st.error_message();
    EXPECT_EQ(resp.status(), HealthCheckResponse::SERVING) << who;
  }
  st = HealthCheck(ca_->Channel(server_->address()), &resp, "linesign.v1.CertificateAuthority");
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.status(), HealthCheckResponse::SERVING);
  st = HealthCheck(ca_->Channel(server_->address()), &resp, "no.such.Service");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND) << st.error_message();
  // A name that is not UTF-8 gets the server's own answer, escaped (gRPC's parser would have refused a string).
  st = HealthCheck(ca_->Channel(server_->address()), &resp, "bad\xFF\nname");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND) << st.error_message();
  EXPECT_THAT(st.error_message(), HasSubstr(R"(unknown service "bad\xFF\nname")"));
}

TEST_F(SecurityTest, ReflectionIsOffByDefault) {
  grpc::Status st = ReflectionListServices(ca_->Channel(server_->address()));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNIMPLEMENTED) << st.error_message();
}

TEST_F(SecurityTest, AuditHoldsNoSecrets) {
  ASSERT_TRUE(Sign(Stub("station-1").get(), "secrets-1").ok());
  auto audit = ReadFile(ca_->dir + "/audit.jsonl");
  ASSERT_TRUE(audit.ok());
  auto pin = ReadFile(ca_->pin_file);
  ASSERT_TRUE(pin.ok());
  ASSERT_FALSE(pin->empty());
  EXPECT_EQ(audit->find(*pin), std::string::npos);
  EXPECT_EQ(audit->find("BEGIN"), std::string::npos);  // no PEM: no CSR, no key, no certificate
  EXPECT_EQ(audit->find("MII"), std::string::npos);    // no base64 DER either
}

// Log rotation: the audit file is moved away and the server gets SIGHUP; later entries go to a new file at the
// configured path. Every decision is in exactly one of the two files, none is lost or written twice.
TEST_F(SecurityTest, SighupReopensTheAuditFileAfterRotation) {
  const std::string path = ca_->dir + "/audit.jsonl", rotated = ca_->dir + "/audit.jsonl.1";
  auto stub = Stub("station-1");
  ASSERT_TRUE(Sign(stub.get(), "rotate-0").ok());
  ASSERT_EQ(rename(path.c_str(), rotated.c_str()), 0);
  ASSERT_EQ(kill(server_->pid(), SIGHUP), 0);
  int n = 1;
  for (; n < 200 && access(path.c_str(), F_OK) != 0; ++n) {  // SIGHUP is handled asynchronously
    ASSERT_TRUE(Sign(stub.get(), absl::StrCat("rotate-", n)).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(Sign(stub.get(), absl::StrCat("rotate-", n)).ok());  // certainly after the reopen
  auto ids_in = [](const std::string& file) {
    std::multiset<std::string> ids;
    std::ifstream in(file);
    for (std::string line; std::getline(in, line);) {
      std::string id = nlohmann::json::parse(line).value("request_id", "");
      if (id.rfind("rotate-", 0) == 0) ids.insert(id);
    }
    return ids;
  };
  std::multiset<std::string> before = ids_in(rotated), after = ids_in(path);
  EXPECT_EQ(before.count("rotate-0"), 1u);
  EXPECT_EQ(after.count(absl::StrCat("rotate-", n)), 1u);
  for (int i = 0; i <= n; ++i) {
    std::string id = absl::StrCat("rotate-", i);
    EXPECT_EQ(before.count(id) + after.count(id), 1u) << id;
  }
}

// SIGHUP re-reads the station CRLs: a station certificate revoked in a new CRL is refused from its next call on
// (its earlier successful verification is not reused), on a stream it keeps open as well, others go on; a CRL file that cannot be read on a later
// SIGHUP leaves the trust in force as it was, and says so in the log.
TEST(TrustReloadTest, SighupRevokesAStationFromItsNextCall) {
  auto ca = TestCa::Create("ec-p256");
  ASSERT_TRUE(ca.ok()) << ca.status();
  const std::string crl_path = ca->dir + "/tls/station-ca.crl";
  auto empty_crl = tls::MakeCrl(ca->station_ca, {}, absl::Now() - absl::Minutes(1));
  ASSERT_TRUE(empty_crl.ok()) << empty_crl.status();
  ASSERT_TRUE(WriteFile(crl_path, *empty_crl).ok());
  v1::ServerConfig config = ca->Config(ca->dir + "/linesign.db");
  config.mutable_tls()->add_crl_files(crl_path);
  auto server = ServerProcess::Start({"--config", testing::WriteConfig(ca->dir, config::ToYaml(config))});
  ASSERT_TRUE(server.ok()) << server.status();

  tls::KeyAndCertificate victim = ca->StationCredentials("station-1");
  tls::KeyAndCertificate other = ca->StationCredentials("station-1");
  auto victim_stub = v1::CertificateAuthority::NewStub(ca->ChannelWith((*server)->address(), victim));
  auto other_stub = v1::CertificateAuthority::NewStub(ca->ChannelWith((*server)->address(), other));
  int n = 0;
  auto sign = [&](v1::CertificateAuthority::Stub* stub) {
    v1::SignCsrRequest req;
    req.set_csr_der(testing::Csr("ec-p256", "/CN=RELOAD"));
    req.set_request_id(absl::StrCat("reload-", ++n));
    v1::SignCsrResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return stub->SignCsr(&ctx, req, &resp);
  };
  ASSERT_TRUE(sign(victim_stub.get()).ok());  // verified once, and remembered
  // A stream the victim opened before the revocation, and keeps open.
  grpc::ClientContext stream_ctx;
  auto stream = victim_stub->SignCsrStream(&stream_ctx);
  auto stream_sign = [&](v1::SignCsrStreamResponse* answer) {
    v1::SignCsrRequest req;
    req.set_csr_der(testing::Csr("ec-p256", "/CN=RELOADS"));
    req.set_request_id(absl::StrCat("reload-", ++n));
    return stream->Write(req) && stream->Read(answer);
  };
  v1::SignCsrStreamResponse answer;
  ASSERT_TRUE(stream_sign(&answer));
  ASSERT_TRUE(answer.has_certificate()) << answer.error().message();

  auto serial = tls::SerialHex(victim.certificate_pem);
  ASSERT_TRUE(serial.ok());
  auto crl = tls::MakeCrl(ca->station_ca, {*serial}, absl::Now() - absl::Minutes(1));
  ASSERT_TRUE(crl.ok()) << crl.status();
  ASSERT_TRUE(WriteFile(crl_path, *crl).ok());
  ASSERT_EQ(kill((*server)->pid(), SIGHUP), 0);
  grpc::Status st;
  for (int i = 0; i < 200; ++i) {  // the signal is handled asynchronously: poll, up to 10 s
    st = sign(victim_stub.get());
    if (!st.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << st.error_message();
  EXPECT_THAT(st.error_message(), HasSubstr(absl::StrCat("(serial ", *serial, ") is revoked")));
  EXPECT_TRUE(sign(other_stub.get()).ok());
  // The open stream: its next request is refused for the same reason, and the stream ends with it.
  answer.Clear();
  ASSERT_TRUE(stream_sign(&answer));
  if (answer.has_certificate()) {
    stream_ctx.TryCancel();
    (*server)->Stop(SIGTERM);
    FAIL() << "a revoked station got a certificate on the stream it had open";
  }
  EXPECT_EQ(answer.error().code(), static_cast<int>(grpc::StatusCode::UNAUTHENTICATED));
  EXPECT_THAT(answer.error().message(), HasSubstr("is revoked"));
  EXPECT_FALSE(stream->Read(&answer));
  grpc::Status stream_status = stream->Finish();
  EXPECT_EQ(stream_status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << stream_status.error_message();
  EXPECT_THAT(stream_status.error_message(), HasSubstr("is revoked"));

  // A broken CRL file on the next SIGHUP: refused with its reason, the trust in force unchanged.
  ASSERT_TRUE(WriteFile(crl_path, "not a CRL").ok());
  ASSERT_EQ(kill((*server)->pid(), SIGHUP), 0);
  EXPECT_EQ(sign(victim_stub.get()).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(sign(other_stub.get()).ok());
  auto stopped = (*server)->Stop(SIGTERM);
  EXPECT_EQ(stopped.exit_code, 0) << stopped.output;
  EXPECT_THAT(stopped.output, HasSubstr("received SIGHUP: station CA bundle and CRLs reloaded"));
  EXPECT_THAT(stopped.output, HasSubstr("received SIGHUP: reload failed, the previous station CAs and CRLs stay in "
                                        "force: tls.crl_files: " + crl_path + " holds no PEM or DER CRL"));
}

// A stream keeps its station's authentication for a while (re-checked after a trust reload and every 5
// minutes), but never past the client certificate's notAfter: the first request after it is refused as expired
// and the stream ends, as a unary call would be refused.
TEST(StreamExpiryTest, AStreamEndsWhenItsStationCertificateExpires) {
  auto ca = TestCa::Create("ec-p256");
  ASSERT_TRUE(ca.ok()) << ca.status();
  v1::ServerConfig config = ca->Config(ca->dir + "/linesign.db");
  auto server = ServerProcess::Start({"--config", testing::WriteConfig(ca->dir, config::ToYaml(config))});
  ASSERT_TRUE(server.ok()) << server.status();
  const absl::Time expires = absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now()) + 4);
  tls::KeyAndCertificate short_lived = ca->StationCredentials("station-1", {.not_after = expires});
  auto stub = v1::CertificateAuthority::NewStub(ca->ChannelWith((*server)->address(), short_lived));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto stream = stub->SignCsrStream(&ctx);
  int n = 0;
  auto stream_sign = [&](v1::SignCsrStreamResponse* answer) {
    v1::SignCsrRequest req;
    req.set_csr_der(testing::Csr("ec-p256", "/CN=EXPIRING"));
    req.set_request_id(absl::StrCat("expiring-", ++n));
    return stream->Write(req) && stream->Read(answer);
  };
  v1::SignCsrStreamResponse answer;
  ASSERT_TRUE(stream_sign(&answer));
  ASSERT_TRUE(answer.has_certificate()) << answer.error().message();
  absl::SleepFor(expires - absl::Now() + absl::Seconds(1));
  answer.Clear();
  ASSERT_TRUE(stream_sign(&answer));
  EXPECT_FALSE(answer.has_certificate()) << "a station whose certificate expired got a certificate on its stream";
  EXPECT_EQ(answer.error().code(), static_cast<int>(grpc::StatusCode::UNAUTHENTICATED)) << answer.error().message();
  EXPECT_THAT(answer.error().message(), HasSubstr("expired"));
  EXPECT_FALSE(stream->Read(&answer));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ((*server)->Stop(SIGTERM).exit_code, 0);
}

// Who is a station (hardening item 1): a station can obtain, through SignCsr, a device certificate whose CN, URI
// SAN and DNS SAN all say "admin". When tls.client_ca_file also trusts linesign's own CAs, that certificate chains
// to a trusted CA and carries clientAuth; it must still never authenticate, as anyone.
class StationIdentityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto ca = TestCa::Create("ec-p256");
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = new TestCa(*ca);
    auto chain = ReadFile(ca_->chain_pem), root = ReadFile(ca_->root_pem);
    ASSERT_TRUE(chain.ok() && root.ok());
    ASSERT_TRUE(WriteFile(with_issuing(), ca_->station_ca.certificate_pem + *chain).ok());
    ASSERT_TRUE(WriteFile(with_root(), ca_->station_ca.certificate_pem + *root + *chain).ok());
  }
  static void TearDownTestSuite() { delete ca_; }

  static std::string with_issuing() { return ca_->dir + "/tls/station-and-issuing-ca.pem"; }
  static std::string with_root() { return ca_->dir + "/tls/station-and-root-ca.pem"; }

  // Config: the test configuration with `bundle` as tls.client_ca_file, URI SANs allowed in "device", and an audit
  // file of its own.
  static v1::ServerConfig Config(const std::string& name, const std::string& bundle, bool require_marker,
                                 const std::string& identity = "subject_cn") {
    v1::ServerConfig c = ca_->Config(ca_->dir + "/" + name + ".db");
    c.mutable_tls()->set_client_ca_file(bundle);
    c.mutable_tls()->set_require_station_marker(require_marker);
    c.mutable_tls()->set_identity(identity);
    (*c.mutable_profiles())["device"].add_san_types("uri");
    v1::AccessRule* uri_admin = c.add_access();
    uri_admin->set_identity("urn:admin");
    uri_admin->set_admin(true);
    c.mutable_audit()->set_file(ca_->dir + "/" + name + "-audit.jsonl");
    return c;
  }

  // Credentials returns a station credential (with the marker) for `who` that names it under every identity
  // source: CN, URI SAN and DNS SAN.
  static tls::KeyAndCertificate Credentials(const std::string& who) {
    return ca_->StationCredentials(who, {.dns_names = {who}, .uris = {who}});
  }

  static TestCa* ca_;
};
TestCa* StationIdentityTest::ca_ = nullptr;

TEST_F(StationIdentityTest, ClientCaBundleWithLinesignsCaNeedsTheStationMarker) {
  for (const std::string& bundle : {with_issuing(), with_root()}) {
    v1::ServerConfig c = Config("refused", bundle, /*require_marker=*/false);
    auto r = testing::RunCommand(
        {testing::ServerBinary(), "--config", testing::WriteConfig(ca_->dir, config::ToYaml(c))}, 60);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_THAT(r.output, HasSubstr("tls.client_ca_file: " + bundle + " trusts linesign's issuing CA '"));
    EXPECT_THAT(r.output, HasSubstr("CN=linesign development intermediate CA,O=linesign development' (ca.chain_file " +
                                    ca_->chain_pem + ") or a CA above it"));
    EXPECT_THAT(r.output, HasSubstr("set tls.require_station_marker: true"));
    EXPECT_THAT(r.output, ::testing::Not(HasSubstr("listening on")));
  }
}

TEST_F(StationIdentityTest, DeviceCertificatesNeverAuthenticateByCnUriOrDnsSan) {
  for (const std::string identity : {"subject_cn", "uri_san", "dns_san"}) {
    SCOPED_TRACE(identity);
    v1::ServerConfig c = Config("impersonate-" + identity, with_root(), /*require_marker=*/true, identity);
    auto server = ServerProcess::Start({"--config", testing::WriteConfig(ca_->dir, config::ToYaml(c))});
    ASSERT_TRUE(server.ok()) << server.status();
    const std::string& address = (*server)->address();

    // A proper station credential works, and obtains a device certificate naming "admin" every way it can.
    auto station = v1::CertificateAuthority::NewStub(ca_->ChannelWith(address, Credentials("station-1")));
    auto key = client::GenerateKey("ec-p256");
    ASSERT_TRUE(key.ok());
    // A URI SAN must be an absolute URI (strict issuance), so under uri_san the administrator is "urn:admin".
    auto csr = client::MakeCsr(key->get(), "/CN=admin", {"DNS:admin", "URI:urn:admin"});
    ASSERT_TRUE(csr.ok()) << csr.status();
    v1::SignCsrRequest req;
    req.set_csr_der(*csr);
    req.set_request_id("get-admin-device-cert");
    v1::SignCsrResponse issued;
    {
      grpc::ClientContext ctx;
      grpc::Status st = station->SignCsr(&ctx, req, &issued);
      ASSERT_TRUE(st.ok()) << st.error_message();
    }
    tls::KeyAndCertificate device{client::PrivateKeyPem(key->get()),
                                  PemEncode("CERTIFICATE", issued.certificate_der()) + issued.chain_pem()};

    // The device certificate is nobody: every RPC, health included, is UNAUTHENTICATED.
    const std::string why = "is a device certificate (issued by linesign's issuing CA";
    auto as_device = v1::CertificateAuthority::NewStub(ca_->ChannelWith(address, device));
    auto device_admin = v1::Administration::NewStub(ca_->ChannelWith(address, device));
    for (const char* profile : {"", "server", "serial"}) {
      req.set_csr_der(testing::Csr("ec-p256", "/CN=DEVICE"));
      req.set_request_id(absl::StrCat("impersonate-sign-", profile));
      req.set_profile(profile);
      grpc::ClientContext ctx;
      v1::SignCsrResponse resp;
      grpc::Status st = as_device->SignCsr(&ctx, req, &resp);
      EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << st.error_message();
      EXPECT_THAT(st.error_message(), HasSubstr(why));
    }
    {
      grpc::ClientContext ctx;
      v1::GetStatsResponse stats;
      grpc::Status st = device_admin->GetStats(&ctx, {}, &stats);
      EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << st.error_message();
      EXPECT_THAT(st.error_message(), HasSubstr(why));
    }
    {
      grpc::ClientContext ctx;
      v1::GetCertificateRequest get;
      get.set_serial_hex(issued.serial_hex());
      v1::GetCertificateResponse resp;
      EXPECT_EQ(device_admin->GetCertificate(&ctx, get, &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
    }
    {
      grpc::ClientContext ctx;
      v1::GetCaChainResponse resp;
      EXPECT_EQ(as_device->GetCaChain(&ctx, {}, &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
    }
    HealthCheckResponse health;
    grpc::Status st = HealthCheck(ca_->ChannelWith(address, device), &health);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << st.error_message();
    EXPECT_THAT(st.error_message(), HasSubstr(why));

    // A certificate from the station CA without the marker is not a station credential either.
    tls::KeyAndCertificate unmarked = *tls::IssueLeaf(
        ca_->station_ca, {.common_name = "admin", .dns_names = {"admin"}, .uris = {"admin"},
                          .not_before = absl::Now() - absl::Minutes(5), .not_after = absl::Now() + absl::Hours(1)});
    {
      grpc::ClientContext ctx;
      v1::GetStatsResponse stats;
      st = v1::Administration::NewStub(ca_->ChannelWith(address, unmarked))->GetStats(&ctx, {}, &stats);
      EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << st.error_message();
      EXPECT_THAT(st.error_message(),
                  HasSubstr(std::string("client certificate 'CN=admin' is not a station credential: it lacks the "
                                        "linesign station EKU ") + auth::kStationEkuOid));
    }

    // The real administrator's credential is one, and sees the refusals counted.
    {
      grpc::ClientContext ctx;
      v1::GetStatsResponse stats;
      st = v1::Administration::NewStub(ca_->ChannelWith(address, Credentials("admin")))
               ->GetStats(&ctx, {}, &stats);
      ASSERT_TRUE(st.ok()) << st.error_message();
      EXPECT_EQ(stats.answers().at("SignCsr UNAUTHENTICATED"), 3u);
      EXPECT_EQ(stats.certificates_recorded(), 1u);  // only the station's own request
    }
    auto stopped = (*server)->Stop(SIGTERM);
    EXPECT_EQ(stopped.exit_code, 0) << stopped.output;

    // The audit log names no device certificate as "admin": its refusals carry no identity.
    std::ifstream in(c.audit().file());
    int refusals = 0;
    for (std::string line; std::getline(in, line);) {
      auto j = nlohmann::json::parse(line);
      if (j.value("request_id", "").rfind("impersonate-", 0) == 0 ||
          j.value("reason", "").find(why) != std::string::npos) {
        EXPECT_EQ(j["identity"], "") << line;
        EXPECT_EQ(j["outcome"], "refused") << line;
        ++refusals;
      }
    }
    EXPECT_GE(refusals, 3);
  }
}

}  // namespace
}  // namespace linesign
