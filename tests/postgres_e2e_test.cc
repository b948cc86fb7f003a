// End to end on PostgreSQL: the real linesign-server binary with `store: {postgres: …}` on the throw-away server
// of the `postgres` ctest fixture (tests/pg/), a SoftHSM2 token, gRPC over loopback. A station signs, the record
// is in PostgreSQL before the answer, a retry gets the same certificate, `linesign-server backup` refuses
// with a pointer to pg_dump, and two replicas' registrars register each certificate with a fake AWS IoT once.
#include <grpcpp/grpcpp.h>

#include <stdlib.h>

#include <fstream>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/openssl_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "linesign/v1/ca.grpc.pb.h"
#include "linesign/v1/iot.grpc.pb.h"
#include "server/config/config.h"
#include "tests/pg/pg_test_server.h"
#include "tests/testing/certs.h"
#include "tests/testing/fake_iot.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_ca.h"

namespace linesign {
namespace {

using ::testing::HasSubstr;

TEST(PostgresEndToEndTest, SignsOverGrpcAndTheRecordIsInPostgres) {
  auto cluster = testing::SharedPgCluster();
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  auto db = testing::CreateTestDatabase(*cluster);
  ASSERT_TRUE(db.ok()) << db.status();
  auto ca = testing::TestCa::Create("ec-p256");
  ASSERT_TRUE(ca.ok()) << ca.status();
  v1::ServerConfig config = ca->Config(ca->dir + "/unused.db");
  *config.mutable_store()->mutable_postgres() = *db;
  const std::string config_path = testing::WriteConfig(ca->dir, config::ToYaml(config));

  auto server = testing::ServerProcess::Start({"--config", config_path});
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::CertificateAuthority::NewStub(ca->Channel((*server)->address()));
  v1::SignCsrRequest req;
  req.set_csr_der(testing::Csr("ec-p256", "/CN=PG-DEVICE-1/O=Acme"));
  req.set_request_id("pg-e2e-1");
  v1::SignCsrResponse resp;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    grpc::Status st = stub->SignCsr(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  auto cert = testing::ParseDer(resp.certificate_der());
  ASSERT_NE(cert, nullptr);
  EXPECT_EQ(testing::VerifyChain(cert.get(), ca->root_pem, ca->chain_pem), "");

  // The record, in PostgreSQL: the DER byte for byte, the request id, the subject.
  const std::string where = absl::StrCat(" FROM certificates WHERE serial = '", resp.serial_hex(), "'");
  EXPECT_EQ(*testing::PgQuery(*db, "SELECT upper(encode(der, 'hex'))" + where), Hex(resp.certificate_der()));
  EXPECT_EQ(*testing::PgQuery(*db, "SELECT request_id" + where), "pg-e2e-1");
  EXPECT_EQ(*testing::PgQuery(*db, "SELECT subject" + where), "O=Acme,CN=PG-DEVICE-1");
  EXPECT_EQ(*testing::PgQuery(*db, "SELECT count(*) FROM schema_migrations"), "2");

  // The same request id again: the same certificate, nothing new recorded.
  v1::SignCsrResponse again;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    ASSERT_TRUE(stub->SignCsr(&ctx, req, &again).ok());
  }
  EXPECT_EQ(again.certificate_der(), resp.certificate_der());
  EXPECT_TRUE(again.replayed());
  EXPECT_EQ(*testing::PgQuery(*db, "SELECT count(*) FROM certificates"), "1");

  testing::ExitResult backup =
      testing::RunCommand({testing::ServerBinary(), "backup", "--config", config_path, "--out", ca->dir + "/b.db"});
  EXPECT_EQ(backup.exit_code, 1) << backup.output;
  EXPECT_THAT(backup.output, HasSubstr("back it up with PostgreSQL's own tools (pg_dump"));

  auto stopped = (*server)->Stop(SIGTERM);
  EXPECT_EQ(stopped.exit_code, 0) << stopped.output;
  std::string password;
  std::ifstream(cluster->password_file) >> password;
  ASSERT_FALSE(password.empty());
  EXPECT_THAT(stopped.output, ::testing::Not(HasSubstr(password)));
  testing::DropTestDatabase(*cluster, *db);
}

// Two replicas on one database: a station's request recorded through one replica and retried through the other
// gets the same certificate (replayed), never a second one.
TEST(PostgresEndToEndTest, ARetryThroughAnotherReplicaGetsTheSameCertificate) {
  auto cluster = testing::SharedPgCluster();
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  auto db = testing::CreateTestDatabase(*cluster);
  ASSERT_TRUE(db.ok()) << db.status();
  auto ca = testing::TestCa::Create("ec-p256");
  ASSERT_TRUE(ca.ok()) << ca.status();
  v1::ServerConfig config = ca->Config(ca->dir + "/unused.db");
  *config.mutable_store()->mutable_postgres() = *db;
  const std::string config_path = testing::WriteConfig(ca->dir, config::ToYaml(config));
  auto a = testing::ServerProcess::Start({"--config", config_path});
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = testing::ServerProcess::Start({"--config", config_path});
  ASSERT_TRUE(b.ok()) << b.status();

  v1::SignCsrRequest req;
  req.set_csr_der(testing::Csr("ec-p256", "/CN=PG-REPLICA-1"));
  req.set_request_id("pg-replica-1");
  v1::SignCsrResponse first, second;
  for (auto [server, resp] : {std::pair{a->get(), &first}, std::pair{b->get(), &second}}) {
    auto stub = v1::CertificateAuthority::NewStub(ca->Channel(server->address()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    grpc::Status st = stub->SignCsr(&ctx, req, resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  EXPECT_FALSE(first.replayed());
  EXPECT_TRUE(second.replayed());
  EXPECT_EQ(second.certificate_der(), first.certificate_der());
  EXPECT_EQ(*testing::PgQuery(*db, "SELECT count(*) FROM certificates"), "1");
  for (auto* server : {a->get(), b->get()}) {
    auto stopped = server->Stop(SIGTERM);
    EXPECT_EQ(stopped.exit_code, 0) << stopped.output;
  }
  testing::DropTestDatabase(*cluster, *db);
}

// Two replicas on one database, both running the AWS IoT registrar against one fake AWS IoT (SigV4 verified, 5xx
// injected): a dozen certificates signed through either replica are each registered exactly once (one successful
// RegisterCertificate each, attached to its thing and policy), and either replica reports the outcome.
TEST(PostgresEndToEndTest, TwoReplicasRegisterEachCertificateWithAwsIotOnce) {
  constexpr char kAccessKey[] = "AKIDLINESIGNPGIOTE2E1";
  constexpr char kSecret[] = "linesignPgIotE2E/K7MDENG+bPxRfiCYzzSecret";
  auto cluster = testing::SharedPgCluster();
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  auto db = testing::CreateTestDatabase(*cluster);
  ASSERT_TRUE(db.ok()) << db.status();
  auto ca = testing::TestCa::Create("ec-p256");
  ASSERT_TRUE(ca.ok()) << ca.status();
  auto fake = testing::FakeIot::Start(kAccessKey, kSecret, "", {"--fault-5xx", "0.1", "--seed", "5"});
  ASSERT_TRUE(fake.ok()) << fake.status();

  v1::ServerConfig config = ca->Config(ca->dir + "/unused.db");
  *config.mutable_store()->mutable_postgres() = *db;
  v1::IotTarget* target = config.mutable_iot()->add_targets();
  target->set_name("main");
  target->set_region("us-east-1");
  target->set_endpoint((*fake)->endpoint());
  config.mutable_iot()->set_retry_base_ms(50);
  config.mutable_iot()->set_retry_max_ms(500);
  v1::Profile& line = (*config.mutable_profiles())["line"];
  line.set_validity_days(30);
  line.add_key_types("ec-p256");
  line.mutable_iot()->set_register_("without_ca");
  line.mutable_iot()->add_targets("main");
  line.mutable_iot()->set_thing_name("{subject.CN}");
  line.mutable_iot()->set_policy("factory-device");
  config.mutable_access(0)->add_profiles("line");  // station-1
  const std::string config_path = testing::WriteConfig(ca->dir, config::ToYaml(config));
  setenv("AWS_ACCESS_KEY_ID", kAccessKey, 1);
  setenv("AWS_SECRET_ACCESS_KEY", kSecret, 1);
  unsetenv("AWS_SESSION_TOKEN");
  auto a = testing::ServerProcess::Start({"--config", config_path});
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = testing::ServerProcess::Start({"--config", config_path});
  ASSERT_TRUE(b.ok()) << b.status();
  testing::ServerProcess* replicas[] = {a->get(), b->get()};

  constexpr int kCertificates = 12;
  std::map<std::string, std::string> cn_by_serial;
  for (int i = 0; i < kCertificates; ++i) {
    v1::SignCsrRequest req;
    const std::string cn = absl::StrCat("pg-iot-dev-", i);
    req.set_csr_der(testing::Csr("ec-p256", "/CN=" + cn));
    req.set_request_id("req-" + cn);
    req.set_profile("line");
    v1::SignCsrResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    grpc::Status st = v1::CertificateAuthority::NewStub(ca->Channel(replicas[i % 2]->address(), "station-1"))
                          ->SignCsr(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    cn_by_serial[resp.serial_hex()] = cn;
  }
  int i = 0;
  for (const auto& [serial, cn] : cn_by_serial) {
    v1::AwaitIotRegistrationRequest req;
    req.set_serial_hex(serial);
    req.set_target("main");
    req.set_timeout_ms(120000);
    v1::IotRegistrationStatus s;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(150));
    grpc::Status st = v1::IotAdministration::NewStub(ca->Channel(replicas[i++ % 2]->address(), "admin"))
                          ->AwaitIotRegistration(&ctx, req, &s);
    ASSERT_TRUE(st.ok()) << serial << ": " << st.error_message();
    EXPECT_EQ(s.state(), v1::IotRegistrationStatus::STATE_REGISTERED) << s.error_code() << " " << s.error_message();
    EXPECT_EQ(s.thing_name(), cn);
    EXPECT_EQ(s.policy(), "factory-device");
  }
  EXPECT_EQ(*testing::PgQuery(*db, "SELECT count(*) FROM iot_registrations WHERE state = 'registered'"),
            absl::StrCat(kCertificates));
  EXPECT_EQ(*testing::PgQuery(*db, "SELECT count(*) FROM events WHERE type = 'IOT_REGISTERED'"),
            absl::StrCat(kCertificates));

  nlohmann::json state = (*fake)->State();
  std::set<std::string> active;
  for (const auto& c : state["certificates"]) {
    if (c["status"] == "ACTIVE") active.insert(c["certificateId"].get<std::string>());
  }
  EXPECT_EQ(active.size(), static_cast<size_t>(kCertificates));
  int registered_ok = 0;
  for (const auto& c : (*fake)->Calls()) {
    registered_ok += c["operation"] == "RegisterCertificateWithoutCA" && c["error"].is_null() && c["fault"].is_null();
  }
  EXPECT_EQ(registered_ok, kCertificates);
  for (auto* server : replicas) {
    auto stopped = server->Stop(SIGTERM);
    EXPECT_EQ(stopped.exit_code, 0) << stopped.output;
  }
  testing::DropTestDatabase(*cluster, *db);
}

}  // namespace
}  // namespace linesign
