// Upgrade: a database written by linesign-server before schema migrations existed (tests/fixtures/v1-store.sqlite-fixture, made by
// tests/fixtures/make_v1_db.sh with the binaries of commit 84fe66f) opens with this binary, is migrated, keeps
// answering for its certificates, and takes new ones beside them; a database from a newer binary is refused.
#include <openssl/bn.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <csignal>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/openssl_util.h"
#include "common/testing/fake_clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/store/sqlite/migrations.h"
#include "server/store/sqlite/sqlite_store.h"
#include "tests/testing/certs.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_ca.h"

namespace linesign {
namespace {

using ::testing::HasSubstr;

// The fixture's three certificates: request ids v1-request-N, CSRs v1-deviceN.csr, certificates v1-deviceN.pem,
// all signed by v1-ca.pem for the station 'anonymous' (the server ran with tls.insecure).
constexpr int kOldCertificates = 3;
constexpr char kOldStation[] = "anonymous";

std::string Fixture(const std::string& name) { return absl::StrCat(testing::SourceDir(), "/tests/fixtures/", name); }

struct OldCertificate {
  std::string serial_hex;
  std::string der;
};

OldCertificate ReadOld(int n) {
  auto pem = ReadFile(Fixture(absl::StrCat("v1-device", n, ".pem")));
  EXPECT_TRUE(pem.ok()) << pem.status();
  auto certs = ParseCertificatesPem(*pem, "fixture");
  EXPECT_TRUE(certs.ok()) << certs.status();
  X509* cert = (*certs)[0].get();
  BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr);
  char* hex = BN_bn2hex(bn);
  OldCertificate out{hex, CertificateDer(cert)};
  OPENSSL_free(hex);
  BN_free(bn);
  return out;
}

// CopyFixture copies v1-store.sqlite-fixture into a new directory and returns the copy's path.
std::string CopyFixture() {
  std::string path = testing::TempDir("upgrade") + "/linesign.db";
  auto db = ReadFile(Fixture("v1-store.sqlite-fixture"));
  EXPECT_TRUE(db.ok()) << db.status();
  EXPECT_TRUE(WriteFile(path, *db, 0600).ok());
  return path;
}

std::string IssuerId() {
  auto pem = ReadFile(Fixture("v1-ca.pem"));
  auto certs = ParseCertificatesPem(*pem, "fixture CA");
  return Hex(Sha256(PublicKeyDer(X509_get0_pubkey((*certs)[0].get()))));
}

TEST(UpgradeTest, TheFixtureIsADatabaseFromBeforeMigrations) {
  std::string path = CopyFixture();
  EXPECT_EQ(testing::SqliteScalar(path, "PRAGMA user_version"), "1");
  EXPECT_EQ(testing::SqliteScalar(path, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'schema_migrations'"), "0");
  EXPECT_EQ(testing::SqliteScalar(path, "SELECT COUNT(*) FROM certificates"), absl::StrCat(kOldCertificates));
}

// Store level: migrated to the latest version, old certificates found by serial and by request (a station's
// retry), new certificates with their events and outbox items recorded beside them, an old request id still
// refused as a duplicate.
TEST(UpgradeTest, AVersion1DatabaseIsMigratedAndKeepsItsCertificates) {
  std::string path = CopyFixture();
  testing::FakeClock clock(absl::FromUnixSeconds(1760000000));
  auto store = store::SqliteStore::Open(path, &clock);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(testing::SqliteScalar(path, "PRAGMA user_version"), absl::StrCat(store::sqlite::LatestVersion()));
  std::vector<std::string> applied;
  for (const auto& m : store::sqlite::Migrations()) applied.push_back(absl::StrCat(m.version, ":1760000000"));
  EXPECT_EQ(testing::SqliteScalar(path, "SELECT group_concat(version || ':' || applied_at) FROM schema_migrations"),
            absl::StrJoin(applied, ","));

  const std::string issuer = IssuerId();
  for (int n = 1; n <= kOldCertificates; ++n) {
    OldCertificate old = ReadOld(n);
    auto by_serial = (*store)->FindBySerial(issuer, old.serial_hex);
    ASSERT_TRUE(by_serial.ok() && by_serial->has_value()) << "serial " << old.serial_hex;
    EXPECT_EQ((*by_serial)->der, old.der);
    EXPECT_EQ((*by_serial)->status, store::CertificateStatus::kValid);
    auto by_request = (*store)->FindByRequest(kOldStation, absl::StrCat("v1-request-", n));
    ASSERT_TRUE(by_request.ok() && by_request->has_value());
    EXPECT_EQ((*by_request)->serial_hex, old.serial_hex);
  }

  store::Batch batch;
  store::BatchEntry fresh;
  fresh.cert = (*(*store)->FindByRequest(kOldStation, "v1-request-1")).value();
  fresh.cert.serial_hex = "7E57";
  fresh.cert.request_id = "v2-request-1";
  fresh.events.push_back(store::Event{.type = "NOTED", .serial_hex = "7E57", .time = clock.Now()});
  fresh.outbox.push_back(store::OutboxItem{.kind = "job", .dedupe_key = "7E57"});
  store::BatchEntry retry = fresh;
  retry.cert.serial_hex = "7E58";
  retry.cert.request_id = "v1-request-2";  // an old request id: still a duplicate
  batch.entries = {fresh, retry};
  auto out = (*store)->RecordBatch(batch);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)[0], store::RecordOutcome::kRecorded);
  EXPECT_EQ((*out)[1], store::RecordOutcome::kDuplicateRequest);
  EXPECT_EQ(*(*store)->Count(), kOldCertificates + 1);
  // The old certificates are the log's first ISSUED events, in their order; the new one follows with its event.
  auto events = (*store)->ReadAfter(0, 100);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), static_cast<size_t>(kOldCertificates) + 2);
  for (int n = 1; n <= kOldCertificates; ++n) {
    EXPECT_EQ((*events)[n - 1].type, store::kEventIssued);
    EXPECT_EQ((*events)[n - 1].serial_hex, ReadOld(n).serial_hex);
  }
  EXPECT_EQ((*events)[kOldCertificates].type, store::kEventIssued);
  EXPECT_EQ((*events)[kOldCertificates].serial_hex, "7E57");
  EXPECT_EQ((*events)[kOldCertificates + 1].type, "NOTED");
  EXPECT_EQ((*events)[kOldCertificates + 1].serial_hex, "7E57");
  auto page = (*store)->List(store::CertificateQuery{.page_size = 2});
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->records.size(), 2u);
  EXPECT_EQ(page->records[0].serial_hex, ReadOld(1).serial_hex);  // the old ones first, in their order
}

TEST(UpgradeTest, ADatabaseFromANewerServerIsRefusedWithBothVersions) {
  std::string path = CopyFixture();
  ASSERT_EQ(testing::SqliteExec(path, "PRAGMA user_version = 99"), "");
  auto store = store::SqliteStore::Open(path);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store.status().message(),
            absl::StrCat("store: database ", path,
                         " has schema version 99 but this linesign-server knows up to ", store::sqlite::LatestVersion(),
                         "; upgrade linesign-server (a database is never downgraded)"));
  EXPECT_EQ(testing::SqliteScalar(path, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'schema_migrations'"), "0");
}

class UpgradeServerTest : public ::testing::Test {
 protected:
  // Config: the fixture's CA (its development key, copied with mode 0600) over plaintext loopback, as when the
  // fixture was made, on the database at `db`.
  std::string Config(const std::string& db) {
    std::string dir = db.substr(0, db.rfind('/'));
    auto key = ReadFile(Fixture("v1-ca.key"));
    EXPECT_TRUE(key.ok()) << key.status();
    EXPECT_TRUE(WriteFile(dir + "/ca.key", *key, 0600).ok());
    return testing::WriteConfig(dir, absl::StrCat(R"(listen: 127.0.0.1:0
http: {listen: 127.0.0.1:0}
hsm: {development_key_file: )", dir, R"(/ca.key}
ca: {chain_file: )", Fixture("v1-ca.pem"), R"(}
store: {sqlite: {path: )", db, R"(}}
profiles:
  device: {validity_days: 3650, key_types: [ec-p256], san_types: [dns]}
default_profile: device
tls: {insecure: true}
access:
  - {identity: anonymous, profiles: [device], admin: true}
audit: {file: )", dir, R"(/audit.jsonl}
)"));
  }

  testing::ExitResult Sign(const std::string& address, const std::string& csr, const std::string& request_id,
                           const std::string& out) {
    return testing::RunCommand({testing::ClientBinary(), "sign", "--server", address, "--insecure", "--csr", csr,
                                "--request-id", request_id, "--out", out});
  }
};

// End to end: the real server started on the old database migrates it at start-up; a station's retry of an old
// request id with the same CSR gets the very certificate issued before the upgrade (replayed); a new request is
// issued beside it, with its ISSUED event.
TEST_F(UpgradeServerTest, TheServerReplaysOldRequestsAndIssuesNewOnesAfterTheUpgrade) {
  std::string db = CopyFixture();
  std::string dir = db.substr(0, db.rfind('/'));
  auto server = testing::ServerProcess::Start({"--config", Config(db)});
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ(testing::SqliteScalar(db, "PRAGMA user_version"), absl::StrCat(store::sqlite::LatestVersion()));

  for (int n = 1; n <= kOldCertificates; ++n) {
    std::string out = absl::StrCat(dir, "/replayed", n, ".pem");
    auto r = Sign((*server)->address(), Fixture(absl::StrCat("v1-device", n, ".csr")),
                  absl::StrCat("v1-request-", n), out);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_THAT(r.output, HasSubstr("replayed"));
    EXPECT_EQ(*ReadFile(out), *ReadFile(Fixture(absl::StrCat("v1-device", n, ".pem"))));
  }
  // Administrators read the old certificates by serial through the Administration service (`linesign show`) and
  // find them in `linesign list`, as status valid; their SANs, written before SANs were typed, read back as one
  // legacy entry, quoted.
  for (int n = 1; n <= kOldCertificates; ++n) {
    OldCertificate old = ReadOld(n);
    auto show = testing::RunCommand({testing::ClientBinary(), "show", "--server", (*server)->address(), "--insecure",
                                     "--serial", old.serial_hex, "--out", dir + "/shown.pem"});
    ASSERT_EQ(show.exit_code, 0) << show.output;
    EXPECT_THAT(show.output, HasSubstr(old.serial_hex));
    EXPECT_THAT(show.output, HasSubstr(absl::StrCat("\"v1-request-", n, "\"")));
    EXPECT_EQ(*ReadFile(dir + "/shown.pem"), *ReadFile(Fixture(absl::StrCat("v1-device", n, ".pem"))));
  }
  auto list = testing::RunCommand({testing::ClientBinary(), "list", "--server", (*server)->address(), "--insecure",
                                   "--all"});
  ASSERT_EQ(list.exit_code, 0) << list.output;
  for (int n = 1; n <= kOldCertificates; ++n) EXPECT_THAT(list.output, HasSubstr(ReadOld(n).serial_hex));

  auto r = Sign((*server)->address(), Fixture("v1-device1.csr"), "after-upgrade-1", dir + "/new.pem");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, ::testing::Not(HasSubstr("replayed")));
  auto stop = (*server)->Stop(SIGTERM);
  EXPECT_EQ(stop.exit_code, 0) << stop.output;

  EXPECT_EQ(testing::SqliteScalar(db, "SELECT COUNT(*) FROM certificates"), absl::StrCat(kOldCertificates + 1));
  // The old certificates precede the new one in the event log (each certificate is its ISSUED event).
  EXPECT_EQ(testing::SqliteScalar(db, "SELECT request_id FROM certificates ORDER BY id DESC LIMIT 1"),
            "after-upgrade-1");
  EXPECT_EQ(testing::SqliteScalar(db, "SELECT COUNT(*) FROM events"), "0");
}

// The real server refuses to start on a database from a newer linesign-server, saying which versions.
TEST_F(UpgradeServerTest, TheServerRefusesToStartOnANewerDatabase) {
  std::string db = CopyFixture();
  ASSERT_EQ(testing::SqliteExec(db, "PRAGMA user_version = 77"), "");
  auto r = testing::RunCommand({testing::ServerBinary(), "--config", Config(db)});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr(absl::StrCat("store: database ", db,
                                               " has schema version 77 but this linesign-server knows up to ",
                                               store::sqlite::LatestVersion())));
}

}  // namespace
}  // namespace linesign
