// The certificate lifecycle end to end (issue 11), in process so the clock can be injected: the real server
// (LinesignServer) with a SoftHSM2 CA, SQLite, gRPC over mTLS, and a FakeClock that carries certificates into
// their renewal window. Two servers on one database file stand for two processes.
#include <grpcpp/grpcpp.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/openssl_util.h"
#include "common/testing/fake_clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "linesign/v1/admin.grpc.pb.h"
#include "linesign/v1/ca.grpc.pb.h"
#include "server/server.h"
#include "server/store/sqlite/sqlite_store.h"
#include "tests/testing/certs.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_ca.h"

namespace linesign {
namespace {

using ::testing::HasSubstr;
using testing::TestCa;

// kPatience bounds every wait for the background scanner (every 100 ms here); the bound is for a loaded machine.
constexpr absl::Duration kPatience = absl::Seconds(60);

// VerifyAt verifies `der` with OpenSSL against the root, the chain untrusted, at time `at`: "" when it verifies.
std::string VerifyAt(const std::string& der, const TestCa& ca, absl::Time at) {
  auto leaf = testing::ParseDer(der);
  if (leaf == nullptr) return "cannot parse";
  OsslPtr<X509_STORE> store(X509_STORE_new());
  if (X509_STORE_load_file(store.get(), ca.root_pem.c_str()) != 1) return "cannot load root";
  auto chain = ParseCertificatesPem(*ReadFile(ca.chain_pem), "chain");
  OsslPtr<STACK_OF(X509)> untrusted(sk_X509_new_null());
  for (auto& c : *chain) sk_X509_push(untrusted.get(), X509_dup(c.get()));
  OsslPtr<X509_STORE_CTX> ctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(ctx.get(), store.get(), leaf.get(), untrusted.get());
  X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(ctx.get()), absl::ToTimeT(at));
  if (X509_verify_cert(ctx.get()) == 1) return "";
  return X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()));
}

class LifecycleTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto ca = TestCa::Create("ec-p256");
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = new TestCa(*std::move(ca));
  }
  static void TearDownTestSuite() {
    delete ca_;
    ca_ = nullptr;
  }

  void SetUp() override { db_ = testing::TempDir("lifecycle") + "/linesign.db"; }
  void TearDown() override { servers_.clear(); }

  v1::ServerConfig Config(uint32_t max_watchers = 16) {
    v1::ServerConfig c = ca_->Config(db_);
    c.mutable_renewal()->set_scan_interval_ms(100);
    c.mutable_events()->set_poll_interval_ms(20);
    c.mutable_events()->set_max_watchers(max_watchers);
    return c;
  }

  LinesignServer* StartServer(uint32_t max_watchers = 16) {
    auto s = LinesignServer::Start(Config(max_watchers), {.clock = &clock_});
    EXPECT_TRUE(s.ok()) << s.status();
    if (!s.ok()) return nullptr;
    servers_.push_back(*std::move(s));
    return servers_.back().get();
  }

  // Channel: credentials valid across the months the fake clock moves (the server checks them at its time).
  std::shared_ptr<grpc::Channel> Channel(LinesignServer* server, const std::string& identity) {
    tls::LeafSpec spec;
    spec.not_before = absl::Now() - absl::Hours(1);
    spec.not_after = absl::Now() + absl::Hours(24 * 400);
    return ca_->ChannelWith(server->address(), ca_->StationCredentials(identity, spec));
  }

  v1::SignCsrResponse Sign(LinesignServer* server, const std::string& cn, const std::string& profile = "server",
                           const std::string& algorithm = "ec-p256") {
    auto stub = v1::CertificateAuthority::NewStub(Channel(server, "station-1"));
    v1::SignCsrRequest req;
    req.set_csr_der(testing::Csr(algorithm, "/CN=" + cn, {"DNS:" + cn + ".example"}));
    req.set_profile(profile);
    req.set_request_id("req-" + cn);
    v1::SignCsrResponse resp;
    grpc::ClientContext ctx;
    grpc::Status st = stub->SignCsr(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp;
  }

  v1::GetCertificateResponse Get(LinesignServer* server, const std::string& serial, grpc::Status* status = nullptr) {
    auto stub = v1::Administration::NewStub(Channel(server, "admin"));
    v1::GetCertificateRequest req;
    req.set_serial_hex(serial);
    v1::GetCertificateResponse resp;
    grpc::ClientContext ctx;
    grpc::Status st = stub->GetCertificate(&ctx, req, &resp);
    if (status != nullptr) *status = st;
    return resp;
  }

  grpc::Status Renew(LinesignServer* server, const std::string& serial, v1::SuccessorResponse* resp,
                     const std::string& identity = "admin") {
    auto stub = v1::Administration::NewStub(Channel(server, identity));
    v1::RenewCertificateRequest req;
    req.set_serial_hex(serial);
    grpc::ClientContext ctx;
    return stub->RenewCertificate(&ctx, req, resp);
  }

  grpc::Status Rekey(LinesignServer* server, const std::string& serial, const std::string& csr_der,
                     v1::SuccessorResponse* resp, const std::string& identity = "station-1") {
    auto stub = v1::Administration::NewStub(Channel(server, identity));
    v1::RekeyCertificateRequest req;
    req.set_serial_hex(serial);
    req.set_csr_der(csr_der);
    grpc::ClientContext ctx;
    return stub->RekeyCertificate(&ctx, req, resp);
  }

  // WaitForStatus waits until GetCertificate reports `status` for `serial`.
  bool WaitForStatus(LinesignServer* server, const std::string& serial, const std::string& status) {
    absl::Time deadline = absl::Now() + kPatience;
    while (absl::Now() < deadline) {
      if (Get(server, serial).status() == status) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }

  // Watch reads events after `cursor` until `n` have arrived (or the stream ends), then cancels.
  std::vector<v1::WatchEventsResponse> Watch(LinesignServer* server, int64_t cursor, size_t n,
                                             grpc::Status* end = nullptr) {
    auto stub = v1::Administration::NewStub(Channel(server, "admin"));
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + kPatience));
    v1::WatchEventsRequest req;
    req.set_after_cursor(cursor);
    auto reader = stub->WatchEvents(&ctx, req);
    std::vector<v1::WatchEventsResponse> out;
    v1::WatchEventsResponse e;
    bool open = true;
    while (out.size() < n && (open = reader->Read(&e))) out.push_back(e);
    if (open) ctx.TryCancel();  // enough read; a stream that ended keeps its own status
    grpc::Status st = reader->Finish();
    if (end != nullptr) *end = st;
    return out;
  }

  // Log returns the whole event log as the store holds it (read directly: no waiting for a stream's end).
  std::vector<store::Event> Log() {
    auto store = store::SqliteStore::Open(db_, &clock_);
    EXPECT_TRUE(store.ok()) << store.status();
    if (!store.ok()) return {};
    auto events = (*store)->ReadAfter(0, 1000);
    EXPECT_TRUE(events.ok()) << events.status();
    return events.ok() ? *events : std::vector<store::Event>{};
  }

  static TestCa* ca_;
  testing::FakeClock clock_{absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now()))};
  std::string db_;
  std::vector<std::unique_ptr<LinesignServer>> servers_;
};

TestCa* LifecycleTest::ca_ = nullptr;

// Managed renewal with two servers on one database: certificates of the 30-day "server" profile become due 10
// days before their end; each gets one RENEWAL_DUE and exactly one successor (same subject, SANs and key, new
// serial, fresh validity) that chain-verifies and links back, and GetCertificate shows both links and statuses.
TEST_F(LifecycleTest, TwoServersRenewEachDueCertificateExactlyOnce) {
  LinesignServer* a = StartServer();
  LinesignServer* b = StartServer();
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  std::vector<v1::SignCsrResponse> old;
  for (int i = 0; i < 6; ++i) old.push_back(Sign(i % 2 == 0 ? a : b, absl::StrCat("TWIN", i)));
  EXPECT_EQ(Get(a, old[0].serial_hex()).status(), "valid");
  clock_.Advance(absl::Hours(24 * 19));
  EXPECT_EQ(Get(a, old[0].serial_hex()).status(), "valid");
  clock_.Advance(absl::Hours(24 * 2));
  for (const auto& o : old) ASSERT_TRUE(WaitForStatus(b, o.serial_hex(), "superseded")) << o.serial_hex();

  for (const auto& o : old) {
    v1::GetCertificateResponse before = Get(a, o.serial_hex());
    ASSERT_FALSE(before.renewed_by_serial().empty());
    EXPECT_TRUE(before.has_renewal_due_at());
    v1::GetCertificateResponse next = Get(b, before.renewed_by_serial());
    EXPECT_EQ(next.status(), "valid");
    EXPECT_EQ(next.renews_serial(), o.serial_hex());
    EXPECT_EQ(next.subject(), before.subject());
    EXPECT_EQ(next.sans(), before.sans());
    EXPECT_EQ(next.station(), "linesign:server");
    EXPECT_EQ(next.request_id(), "renew:" + o.serial_hex());
    EXPECT_EQ(next.not_after().seconds() - next.not_before().seconds(),
              before.not_after().seconds() - before.not_before().seconds());
    EXPECT_GT(next.not_after().seconds(), before.not_after().seconds());
    EXPECT_FALSE(next.chain_pem().empty());
    EXPECT_EQ(VerifyAt(next.certificate_der(), *ca_, clock_.Now()), "");
    auto old_cert = testing::ParseDer(before.certificate_der());
    auto new_cert = testing::ParseDer(next.certificate_der());
    EXPECT_EQ(PublicKeyDer(X509_get0_pubkey(old_cert.get())), PublicKeyDer(X509_get0_pubkey(new_cert.get())));
  }
  // A few more rounds of both scanners change nothing: one RENEWAL_DUE and one RENEWED per certificate.
  absl::SleepFor(absl::Milliseconds(300));
  std::map<std::string, int> per_type;
  for (const auto& e : Log()) {
    if (e.type == "ISSUED") continue;
    ++per_type[e.type];
  }
  EXPECT_EQ(per_type["RENEWAL_DUE"], 6);
  EXPECT_EQ(per_type["RENEWED"], 6);
  EXPECT_EQ(per_type.size(), 2u);
}

// RenewCertificate: an administrator forces a renewal; an unknown serial, a superseded certificate, a malformed
// serial and a station each get their own error, and none of them changes anything.
TEST_F(LifecycleTest, ForcedRenewalAndItsRefusals) {
  LinesignServer* a = StartServer();
  ASSERT_NE(a, nullptr);
  v1::SignCsrResponse first = Sign(a, "FORCE1", "device");
  v1::SuccessorResponse renewed;
  grpc::Status st = Renew(a, first.serial_hex(), &renewed);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(renewed.renews_serial(), first.serial_hex());
  EXPECT_NE(renewed.serial_hex(), first.serial_hex());
  EXPECT_EQ(VerifyAt(renewed.certificate_der(), *ca_, clock_.Now()), "");
  EXPECT_EQ(Get(a, first.serial_hex()).status(), "superseded");

  auto count = [&] {
    int n = 0;
    for (const auto& e : Log()) n += e.type == "ISSUED" ? 0 : 1;
    return n;
  };
  const int events = count();
  v1::SuccessorResponse none;
  st = Renew(a, "0123456789ABCDEF", &none);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(st.error_message(), HasSubstr("no certificate with serial 0123456789ABCDEF"));
  st = Renew(a, first.serial_hex(), &none);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(st.error_message(), HasSubstr("already superseded by " + renewed.serial_hex()));
  st = Renew(a, "XYZ", &none);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  st = Renew(a, renewed.serial_hex(), &none, "station-1");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(st.error_message(), HasSubstr("administrators only"));
  EXPECT_EQ(Get(a, renewed.serial_hex()).status(), "valid");
  EXPECT_EQ(count(), events);
}

// RekeyCertificate by the station that may use the profile: a new key, same subject, linked like a renewal with a
// REKEYED event; a retry with the same CSR is replayed. A CSR of a key type the profile does not allow, a
// malformed CSR, another subject, a station not allowed the profile: each its own error, nothing changed.
TEST_F(LifecycleTest, RekeyAndItsRefusals) {
  LinesignServer* a = StartServer();
  ASSERT_NE(a, nullptr);
  v1::SignCsrResponse old = Sign(a, "REKEY1");  // profile "server": P-256 and P-384 keys only
  const std::string rsa = testing::Csr("rsa-2048", "/CN=REKEY1", {});
  v1::SuccessorResponse none;
  grpc::Status st = Rekey(a, old.serial_hex(), rsa, &none);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("RSA keys are not allowed by profile 'server'"));
  st = Rekey(a, old.serial_hex(), "not a CSR", &none);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  st = Rekey(a, old.serial_hex(), testing::Csr("ec-p256", "/CN=SOMEONE-ELSE", {}), &none);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("a re-key keeps the subject"));
  const std::string csr = testing::Csr("ec-p384", "/CN=REKEY1", {});
  st = Rekey(a, old.serial_hex(), csr, &none, "line1-st1");  // only "device" for it
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(st.error_message(), HasSubstr("may not use profile 'server'"));
  st = Rekey(a, "0123456789ABCDEF", csr, &none);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Get(a, old.serial_hex()).status(), "valid");

  v1::SuccessorResponse next;
  st = Rekey(a, old.serial_hex(), csr, &next);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(next.renews_serial(), old.serial_hex());
  EXPECT_FALSE(next.replayed());
  EXPECT_EQ(VerifyAt(next.certificate_der(), *ca_, clock_.Now()), "");
  v1::GetCertificateResponse before = Get(a, old.serial_hex());
  EXPECT_EQ(before.status(), "superseded");
  EXPECT_EQ(before.renewed_by_serial(), next.serial_hex());
  auto old_cert = testing::ParseDer(old.certificate_der());
  auto new_cert = testing::ParseDer(next.certificate_der());
  EXPECT_NE(PublicKeyDer(X509_get0_pubkey(old_cert.get())), PublicKeyDer(X509_get0_pubkey(new_cert.get())));
  v1::SuccessorResponse again;
  st = Rekey(a, old.serial_hex(), csr, &again);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_TRUE(again.replayed());
  EXPECT_EQ(again.serial_hex(), next.serial_hex());
  // Another key for the superseded certificate: refused, it has its successor.
  st = Rekey(a, old.serial_hex(), testing::Csr("ec-p256", "/CN=REKEY1", {}), &none);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  int rekeyed = 0;
  for (const auto& e : Log()) {
    if (e.type == "REKEYED") {
      ++rekeyed;
      EXPECT_EQ(e.serial_hex, next.serial_hex());
      EXPECT_THAT(e.data, HasSubstr(old.serial_hex()));
    }
  }
  EXPECT_EQ(rekeyed, 1);
}

// WatchEvents: events in order, live, and resumed from a cursor after a server restart without loss or repeat;
// a stream open at shutdown ends UNAVAILABLE naming the cursor to resume from; one watcher too many is refused.
TEST_F(LifecycleTest, EventsStreamLiveAndResumeAfterARestart) {
  LinesignServer* a = StartServer(/*max_watchers=*/1);
  ASSERT_NE(a, nullptr);
  std::vector<std::string> renewed;
  for (int i = 0; i < 3; ++i) {
    v1::SuccessorResponse r;
    ASSERT_TRUE(Renew(a, Sign(a, absl::StrCat("EV", i), "device").serial_hex(), &r).ok());
    renewed.push_back(r.serial_hex());
  }
  // Live: a watcher opened before the next events sees them arrive.
  auto stub = v1::Administration::NewStub(Channel(a, "admin"));
  grpc::ClientContext live_ctx;
  live_ctx.set_deadline(absl::ToChronoTime(absl::Now() + kPatience));
  v1::WatchEventsRequest from_start;
  auto live = stub->WatchEvents(&live_ctx, from_start);
  std::vector<v1::WatchEventsResponse> seen;
  v1::WatchEventsResponse e;
  auto renewed_count = [&] {
    return std::count_if(seen.begin(), seen.end(), [](const auto& x) { return x.type() == "RENEWED"; });
  };
  while (renewed_count() < 3 && live->Read(&e)) seen.push_back(e);
  ASSERT_EQ(renewed_count(), 3);
  // One watcher at most here: a second is refused while this one is open.
  grpc::Status refused;
  EXPECT_TRUE(Watch(a, 0, 1, &refused).empty());
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("events.max_watchers 1"));

  v1::SuccessorResponse r;
  ASSERT_TRUE(Renew(a, Sign(a, "EV3", "device").serial_hex(), &r).ok());
  renewed.push_back(r.serial_hex());
  while (renewed_count() < 4 && live->Read(&e)) seen.push_back(e);
  ASSERT_EQ(renewed_count(), 4);
  for (size_t i = 1; i < seen.size(); ++i) EXPECT_GT(seen[i].cursor(), seen[i - 1].cursor());
  const int64_t cursor = seen.back().cursor();

  // Shutdown ends the stream UNAVAILABLE with the cursor to resume from.
  servers_.clear();
  while (live->Read(&e)) seen.push_back(e);
  grpc::Status end = live->Finish();
  EXPECT_EQ(end.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(end.error_message(), HasSubstr("resume with after_cursor " + std::to_string(seen.back().cursor())));

  // Restarted on the same database: resuming after the last cursor gives exactly what came after it.
  LinesignServer* again = StartServer();
  ASSERT_NE(again, nullptr);
  ASSERT_TRUE(Renew(again, Sign(again, "EV4", "device").serial_hex(), &r).ok());
  // The log holds what a stream from `cursor` must deliver: exactly those events, in order.
  std::vector<int64_t> expected;
  int64_t last = 0;
  for (const auto& x : Log()) {
    EXPECT_GT(x.id, last);  // ids only grow
    last = x.id;
    if (x.id > cursor) expected.push_back(x.id);
  }
  std::vector<int64_t> got;
  std::vector<std::string> types;
  for (const auto& x : Watch(again, cursor, expected.size())) {
    got.push_back(x.cursor());
    if (x.type() != "ISSUED") types.push_back(x.type() + " " + x.serial_hex());
  }
  EXPECT_EQ(got, expected);
  EXPECT_THAT(types, ::testing::ElementsAre("RENEWED " + r.serial_hex()));
  // And from 0, every event of the log once, in order.
  std::vector<int64_t> ids;
  for (const auto& x : Log()) ids.push_back(x.id);
  std::vector<int64_t> streamed;
  for (const auto& x : Watch(again, 0, ids.size())) streamed.push_back(x.cursor());
  EXPECT_EQ(streamed, ids);
}

// The administrator's CLI against the server: list what expires within 60 days, force a renewal, see both
// certificates' status and links, read the events (and as JSON), and a refusal as one line and exit 1.
TEST_F(LifecycleTest, TheCliListsRenewsGetsAndPrintsEvents) {
  LinesignServer* a = StartServer();
  ASSERT_NE(a, nullptr);
  v1::SignCsrResponse old = Sign(a, "CLI1");  // 30 days: within 60
  Sign(a, "CLI2", "device");                  // 365 days: not
  const std::string dir = testing::TempDir("cli");
  tls::LeafSpec spec;
  spec.not_before = absl::Now() - absl::Hours(1);
  spec.not_after = absl::Now() + absl::Hours(24 * 400);
  tls::KeyAndCertificate admin = ca_->StationCredentials("admin", spec);
  ASSERT_TRUE(WriteFile(dir + "/ca.pem", ca_->station_ca.certificate_pem).ok());
  ASSERT_TRUE(WriteFile(dir + "/cert.pem", admin.certificate_pem).ok());
  ASSERT_TRUE(WriteFile(dir + "/key.pem", admin.key_pem).ok());
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.begin(), testing::ClientBinary());
    args.insert(args.end(), {"--server", a->address(), "--tls-dir", dir});
    return testing::RunCommand(args);
  };
  auto listed = cli({"list", "--expiring-within", "60d"});
  ASSERT_EQ(listed.exit_code, 0) << listed.output;
  EXPECT_THAT(listed.output, HasSubstr(old.serial_hex()));
  EXPECT_THAT(listed.output, ::testing::Not(HasSubstr("CLI2")));
  auto renewed = cli({"renew", old.serial_hex()});
  ASSERT_EQ(renewed.exit_code, 0) << renewed.output;
  EXPECT_THAT(renewed.output, HasSubstr("renewed " + old.serial_hex() + " -> "));
  auto got = cli({"get", old.serial_hex()});
  ASSERT_EQ(got.exit_code, 0) << got.output;
  EXPECT_THAT(got.output, HasSubstr("status:            superseded"));
  const std::string successor = Get(a, old.serial_hex()).renewed_by_serial();
  EXPECT_THAT(got.output, HasSubstr("renewed_by_serial: " + successor));
  auto superseded = cli({"list", "--status", "superseded", "--json"});
  ASSERT_EQ(superseded.exit_code, 0) << superseded.output;
  EXPECT_THAT(superseded.output, HasSubstr("\"renewed_by_serial\":\"" + successor + "\""));
  auto events = cli({"events"});
  ASSERT_EQ(events.exit_code, 0) << events.output;
  EXPECT_THAT(events.output, HasSubstr(" RENEWED " + successor));
  auto json = cli({"events", "--json"});
  EXPECT_THAT(json.output, HasSubstr("\"type\":\"RENEWED\""));
  auto refused = cli({"renew", old.serial_hex()});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_THAT(refused.output, HasSubstr("linesign: renew failed: FAILED_PRECONDITION: certificate " +
                                        old.serial_hex() + " is already superseded by " + successor));
  auto bad = cli({"list", "--expiring-within", "soon"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.output, HasSubstr("--expiring-within 'soon' is not a duration"));
}

}  // namespace
}  // namespace linesign
