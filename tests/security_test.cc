// Stations are who they say they are: the real server with mTLS, a CRL, access rules and an audit file. Each
// refusal is checked for its code and message, that it was counted (GetStats, as an administrator), audited,
// and that nothing was recorded.
#include <grpcpp/grpcpp.h>

#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/openssl_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "linesign/v1/ca.grpc.pb.h"
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
    grpc::Status st = Stub("admin")->GetStats(&ctx, {}, &resp);
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
    grpc::Status st = Stub("station-1")->GetCertificate(&ctx, req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_THAT(st.error_message(), HasSubstr("identity 'station-1' may not call GetCertificate: administrators only"));
  }
  {
    grpc::ClientContext ctx;
    grpc::Status st = Stub("admin")->GetCertificate(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(resp.certificate_der(), issued.certificate_der());
    EXPECT_EQ(resp.station(), "station-1");
    EXPECT_EQ(resp.request_id(), "admin-lookup-1");
  }
  {
    req.set_serial_hex("7F");
    grpc::ClientContext ctx;
    EXPECT_EQ(Stub("admin")->GetCertificate(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    v1::GetStatsResponse stats;
    EXPECT_EQ(Stub("station-1")->GetStats(&ctx, {}, &stats).error_code(), grpc::StatusCode::PERMISSION_DENIED);
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

}  // namespace
}  // namespace linesign
