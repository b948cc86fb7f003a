// Revocation and the CRL, end to end: the real linesign-server binary with its CA key in a SoftHSM2 token made by
// the ceremony script, real gRPC over mTLS, a real SQLite file, and the OpenSSL command line (and the strict
// parsers: OpenSSL, GnuTLS certtool, python3-cryptography) judging every CRL.
#include <grpcpp/grpcpp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <chrono>
#include <map>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/openssl_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "linesign/v1/admin.grpc.pb.h"
#include "linesign/v1/ca.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "server/config/config.h"
#include "tests/testing/certs.h"
#include "tests/testing/server_process.h"
#include "tests/testing/strict_parse.h"
#include "tests/testing/test_ca.h"
#include "server/tls/tls_pki.h"

namespace linesign {
namespace {

using ::testing::HasSubstr;
using testing::ServerProcess;
using testing::TestCa;

constexpr char kCdp[] = "http://crl.linesign.test/issuing-ca.crl";

std::unique_ptr<grpc::ClientContext> Context() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  return ctx;
}

// CrlEntries maps each serial (upper-case hex) of a DER CRL to its reasonCode (-1 when absent); the number too.
struct ParsedCrl {
  int64_t number = -1;
  std::map<std::string, long> reasons;
};
ParsedCrl ParseCrl(const std::string& der) {
  ParsedCrl out;
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  OsslPtr<X509_CRL> crl(d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size())));
  if (crl == nullptr) return out;
  auto* n = static_cast<ASN1_INTEGER*>(X509_CRL_get_ext_d2i(crl.get(), NID_crl_number, nullptr, nullptr));
  if (n != nullptr) out.number = ASN1_INTEGER_get(n);
  ASN1_INTEGER_free(n);
  STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl.get());
  for (int i = 0; i < sk_X509_REVOKED_num(revoked); ++i) {
    X509_REVOKED* r = sk_X509_REVOKED_value(revoked, i);
    OsslPtr<BIGNUM> bn(ASN1_INTEGER_to_BN(X509_REVOKED_get0_serialNumber(r), nullptr));
    char* hex = BN_bn2hex(bn.get());
    auto* reason = static_cast<ASN1_ENUMERATED*>(X509_REVOKED_get_ext_d2i(r, NID_crl_reason, nullptr, nullptr));
    out.reasons[hex] = reason == nullptr ? -1 : ASN1_ENUMERATED_get(reason);
    ASN1_ENUMERATED_free(reason);
    OPENSSL_free(hex);
  }
  return out;
}

// Canonical strips leading "00" pairs, as the server stores serials.
std::string Canonical(std::string serial) {
  while (serial.size() > 1 && serial[0] == '0' && serial[1] == '0') serial.erase(0, 2);
  return serial;
}

// A server of its own (its own database) with the "device" profile carrying a CRL distribution point.
class Server {
 public:
  static absl::StatusOr<std::unique_ptr<Server>> Start(const TestCa& ca, const std::string& db) {
    std::unique_ptr<Server> s(new Server(ca));
    v1::ServerConfig config = ca.Config(db);
    (*config.mutable_profiles())["device"].set_crl_distribution_point(kCdp);
    s->config_path_ = testing::WriteConfig(testing::TempDir("revocation-config"), config::ToYaml(config));
    auto process = ServerProcess::Start({"--config", s->config_path_});
    if (!process.ok()) return process.status();
    s->process_ = *std::move(process);
    return s;
  }
  const std::string& address() const { return process_->address(); }
  ServerProcess* process() { return process_.get(); }

  v1::CertificateAuthority::Stub* Station() {
    if (station_ == nullptr) station_ = v1::CertificateAuthority::NewStub(ca_.Channel(address(), "station-1"));
    return station_.get();
  }
  v1::Administration::Stub* Admin() {
    if (admin_ == nullptr) admin_ = v1::Administration::NewStub(ca_.Channel(address(), "admin"));
    return admin_.get();
  }

  // Issue signs a fresh P-256 CSR under "device" and returns the response.
  v1::SignCsrResponse Issue(const std::string& cn) {
    v1::SignCsrRequest req;
    req.set_csr_der(testing::Csr("ec-p256", "/CN=" + cn));
    req.set_request_id(cn);
    v1::SignCsrResponse resp;
    grpc::Status st = Station()->SignCsr(Context().get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp;
  }
  grpc::Status Revoke(const std::string& serial, int reason, v1::RevokeCertificateResponse* resp) {
    v1::RevokeCertificateRequest req;
    req.set_serial_hex(serial);
    req.set_reason(static_cast<v1::RevocationReason>(reason));
    return Admin()->RevokeCertificate(Context().get(), req, resp);
  }
  v1::GetCrlResponse Crl() {
    v1::GetCrlResponse resp;
    grpc::Status st = Station()->GetCrl(Context().get(), {}, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp;
  }
  // WaitForCrl returns the first CRL (polled) that satisfies `done`; fails the test after 60 s.
  v1::GetCrlResponse WaitForCrl(const std::function<bool(const ParsedCrl&)>& done) {
    absl::Time deadline = absl::Now() + absl::Seconds(60);
    for (;;) {
      v1::GetCrlResponse crl = Crl();
      if (done(ParseCrl(crl.crl_der()))) return crl;
      if (absl::Now() > deadline) {
        ADD_FAILURE() << "no CRL satisfied the condition within 60 s; last number " << crl.crl_number();
        return crl;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
  }

 private:
  explicit Server(const TestCa& ca) : ca_(ca) {}
  const TestCa& ca_;
  std::string config_path_;
  std::unique_ptr<ServerProcess> process_;
  std::unique_ptr<v1::CertificateAuthority::Stub> station_;
  std::unique_ptr<v1::Administration::Stub> admin_;
};

class RevocationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto ca = TestCa::Create("ec-p256");
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = new TestCa(*ca);
    db_ = new std::string(ca_->dir + "/linesign.db");
    auto server = Server::Start(*ca_, *db_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
    // The CA file for OpenSSL: the root and the issuing CA.
    ca_file_ = new std::string(ca_->dir + "/root-and-chain.pem");
    ASSERT_TRUE(WriteFile(*ca_file_, *ReadFile(ca_->root_pem) + *ReadFile(ca_->chain_pem)).ok());
  }
  static void TearDownTestSuite() {
    if (server_ != nullptr) {
      auto r = server_->process()->Stop(SIGTERM);
      EXPECT_EQ(r.exit_code, 0) << r.output;
      delete server_;
    }
    delete ca_file_;
    delete db_;
    delete ca_;
  }

  static std::string Db(const std::string& sql) { return testing::SqliteScalar(*db_, sql); }
  // State is what a refused revocation must leave unchanged.
  static std::string State() {
    return absl::StrCat(Db("SELECT group_concat(serial || ':' || status || ':' || IFNULL(revoked_at, '-') || ':' || "
                           "IFNULL(revocation_reason, '-'), ',') FROM (SELECT * FROM certificates ORDER BY id)"),
                        " events=", Db("SELECT COUNT(*) FROM events"),
                        " crl_state=", Db("SELECT group_concat(last_number || '/' || revocations) FROM crl_state"));
  }
  static std::string WriteTemp(const std::string& name, const std::string& data) {
    std::string path = testing::TempDir("revocation") + "/" + name;
    EXPECT_TRUE(WriteFile(path, data).ok());
    return path;
  }

  static TestCa* ca_;
  static std::string* db_;
  static std::string* ca_file_;
  static Server* server_;
};
TestCa* RevocationTest::ca_ = nullptr;
std::string* RevocationTest::db_ = nullptr;
std::string* RevocationTest::ca_file_ = nullptr;
Server* RevocationTest::server_ = nullptr;

// Revoke one of two certificates: the store records it with a REVOKED event, the next CRL lists it with its
// reason, `openssl crl -verify` accepts the CRL against the chain, and `openssl verify -crl_check` refuses the
// revoked certificate and accepts the other. Every CRL passes the three strict parsers. The issued certificates
// carry the profile's CRL distribution point and pass the strict parsers too.
TEST_F(RevocationTest, ARevokedCertificateIsInTheNextCrlAndOpenSslAgrees) {
  v1::SignCsrResponse revoked = server_->Issue("REVOKE-ME");
  v1::SignCsrResponse valid = server_->Issue("KEEP-ME");
  ASSERT_FALSE(revoked.serial_hex().empty());
  for (const auto* cert : {&revoked, &valid}) {
    EXPECT_TRUE(testing::StrictParse(cert->certificate_der()).ok()) << testing::StrictParse(cert->certificate_der());
    auto x = testing::ParseDer(cert->certificate_der());
    auto* points = static_cast<CRL_DIST_POINTS*>(X509_get_ext_d2i(x.get(), NID_crl_distribution_points, nullptr, nullptr));
    ASSERT_NE(points, nullptr);
    ASSERT_EQ(sk_DIST_POINT_num(points), 1);
    const GENERAL_NAMES* names = sk_DIST_POINT_value(points, 0)->distpoint->name.fullname;
    const GENERAL_NAME* uri = sk_GENERAL_NAME_value(names, 0);
    ASSERT_EQ(uri->type, GEN_URI);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri->d.uniformResourceIdentifier)),
                          ASN1_STRING_length(uri->d.uniformResourceIdentifier)),
              kCdp);
    CRL_DIST_POINTS_free(points);
  }
  v1::GetCrlResponse before = server_->Crl();
  EXPECT_GT(before.crl_number(), 0u);
  EXPECT_TRUE(testing::StrictParseCrl(before.crl_der()).ok()) << testing::StrictParseCrl(before.crl_der());

  const std::string serial = Canonical(revoked.serial_hex());
  v1::RevokeCertificateResponse resp;
  grpc::Status st = server_->Revoke(revoked.serial_hex(), v1::REVOCATION_REASON_KEY_COMPROMISE, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_FALSE(resp.already_revoked());
  EXPECT_EQ(resp.serial_hex(), serial);
  EXPECT_EQ(resp.reason(), v1::REVOCATION_REASON_KEY_COMPROMISE);
  EXPECT_NEAR(resp.revoked_at().seconds(), absl::ToUnixSeconds(absl::Now()), 60);

  EXPECT_EQ(Db(absl::StrCat("SELECT status || ' ' || revocation_reason || ' ' || (revoked_at = ",
                            resp.revoked_at().seconds(), ") FROM certificates WHERE serial = '", serial, "'")),
            "revoked 1 1");
  EXPECT_EQ(Db(absl::StrCat("SELECT type || ' ' || station || ' ' || profile FROM events WHERE serial = '", serial,
                            "' AND type = 'REVOKED'")),
            "REVOKED station-1 device");

  v1::GetCrlResponse after = server_->WaitForCrl([&](const ParsedCrl& c) { return c.reasons.contains(serial); });
  ParsedCrl parsed = ParseCrl(after.crl_der());
  EXPECT_GT(after.crl_number(), before.crl_number());
  EXPECT_EQ(parsed.number, static_cast<int64_t>(after.crl_number()));
  EXPECT_EQ(parsed.reasons[serial], 1);  // keyCompromise
  EXPECT_FALSE(parsed.reasons.contains(Canonical(valid.serial_hex())));
  EXPECT_EQ(after.next_update().seconds() - after.this_update().seconds(), 7 * 24 * 3600);
  EXPECT_TRUE(testing::StrictParseCrl(after.crl_der()).ok()) << testing::StrictParseCrl(after.crl_der());

  const std::string crl_pem = WriteTemp("crl.pem", PemEncode("X509 CRL", after.crl_der()));
  auto verify_crl = testing::RunCommand({"/usr/bin/openssl", "crl", "-in", crl_pem, "-noout", "-verify", "-CAfile", *ca_file_});
  EXPECT_EQ(verify_crl.exit_code, 0) << verify_crl.output;
  EXPECT_THAT(verify_crl.output, HasSubstr("verify OK"));

  const std::string revoked_pem = WriteTemp("revoked.pem", revoked.certificate_pem());
  const std::string valid_pem = WriteTemp("valid.pem", valid.certificate_pem());
  auto refused = testing::RunCommand({"/usr/bin/openssl", "verify", "-crl_check", "-CAfile", ca_->root_pem, "-untrusted",
                                      ca_->chain_pem, "-CRLfile", crl_pem, revoked_pem});
  EXPECT_NE(refused.exit_code, 0) << refused.output;
  EXPECT_THAT(refused.output, HasSubstr("certificate revoked"));
  auto accepted = testing::RunCommand({"/usr/bin/openssl", "verify", "-crl_check", "-CAfile", ca_->root_pem, "-untrusted",
                                       ca_->chain_pem, "-CRLfile", crl_pem, valid_pem});
  EXPECT_EQ(accepted.exit_code, 0) << accepted.output;
  EXPECT_THAT(accepted.output, HasSubstr(": OK"));
}

// A second revocation (another reason) answers OK with the first one's time and reason, already_revoked, and
// changes nothing: no event, no count, the same CRL entry.
TEST_F(RevocationTest, ASecondRevokeReportsTheFirstAndChangesNothing) {
  v1::SignCsrResponse cert = server_->Issue("TWICE");
  v1::RevokeCertificateResponse first, second;
  ASSERT_TRUE(server_->Revoke(cert.serial_hex(), v1::REVOCATION_REASON_CESSATION_OF_OPERATION, &first).ok());
  const std::string state = State();
  grpc::Status st = server_->Revoke(absl::AsciiStrToLower(cert.serial_hex()), v1::REVOCATION_REASON_KEY_COMPROMISE,
                                    &second);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_TRUE(second.already_revoked());
  EXPECT_FALSE(first.already_revoked());
  EXPECT_EQ(second.reason(), v1::REVOCATION_REASON_CESSATION_OF_OPERATION);
  EXPECT_EQ(second.revoked_at().seconds(), first.revoked_at().seconds());
  EXPECT_EQ(State(), state);
  const std::string serial = Canonical(cert.serial_hex());
  v1::GetCrlResponse crl = server_->WaitForCrl([&](const ParsedCrl& c) { return c.reasons.contains(serial); });
  EXPECT_EQ(ParseCrl(crl.crl_der()).reasons[serial], 5);
}

// Each bad revocation gets its own status and message and changes nothing: the records, the events, the CRL
// state and the CRL (its number) stay as they were; each refusal is counted under its code.
TEST_F(RevocationTest, EachBadRevocationGetsItsOwnErrorAndChangesNothing) {
  v1::SignCsrResponse cert = server_->Issue("BADINPUT");
  // Let any CRL a previous test caused be made first, so the number below is stable.
  server_->WaitForCrl([](const ParsedCrl&) { return true; });
  absl::SleepFor(absl::Milliseconds(1500));
  const uint64_t number = server_->Crl().crl_number();
  const std::string state = State();
  struct Case {
    std::string serial;
    int reason;
    std::string identity;
    grpc::StatusCode code;
    std::string message;
  } cases[] = {
      {"0123456789ABCDEF", 1, "admin", grpc::StatusCode::NOT_FOUND,
       "no certificate with serial 0123456789ABCDEF from this CA"},
      {cert.serial_hex(), 99, "admin", grpc::StatusCode::INVALID_ARGUMENT,
       "reason 99 is not an RFC 5280 CRLReason (0 to 10; 7 is unused; linesign accepts 0-5 and 9)"},
      {cert.serial_hex(), 7, "admin", grpc::StatusCode::INVALID_ARGUMENT, "reason 7 is not an RFC 5280 CRLReason"},
      {cert.serial_hex(), 6, "admin", grpc::StatusCode::INVALID_ARGUMENT,
       "reason certificateHold (6) is not supported: linesign revocations are final"},
      {cert.serial_hex(), 8, "admin", grpc::StatusCode::INVALID_ARGUMENT, "reason removeFromCRL (8) is refused"},
      {cert.serial_hex(), 10, "admin", grpc::StatusCode::INVALID_ARGUMENT, "reason aACompromise (10) is refused"},
      {"XYZ", 1, "admin", grpc::StatusCode::INVALID_ARGUMENT,
       "serial_hex must be 1 to 42 hexadecimal digits (got 3 bytes: \"XYZ\")"},
      {"", 1, "admin", grpc::StatusCode::INVALID_ARGUMENT, "serial_hex must be 1 to 42 hexadecimal digits (got 0"},
      {std::string(43, 'A'), 1, "admin", grpc::StatusCode::INVALID_ARGUMENT, "(got 43 bytes"},
      {cert.serial_hex(), 1, "station-1", grpc::StatusCode::PERMISSION_DENIED,
       "identity 'station-1' may not call RevokeCertificate: administrators only (admin: true)"},
      {cert.serial_hex(), 1, "intruder", grpc::StatusCode::PERMISSION_DENIED, "identity 'intruder'"},
  };
  auto stats = [&] {
    v1::GetStatsResponse s;
    EXPECT_TRUE(server_->Admin()->GetStats(Context().get(), {}, &s).ok());
    return std::map<std::string, uint64_t>(s.answers().begin(), s.answers().end());
  };
  auto counts_before = stats();
  std::map<std::string, uint64_t> expected_increase;
  for (const Case& c : cases) {
    v1::RevokeCertificateRequest req;
    req.set_serial_hex(c.serial);
    req.set_reason(static_cast<v1::RevocationReason>(c.reason));
    v1::RevokeCertificateResponse resp;
    auto admin = v1::Administration::NewStub(ca_->Channel(server_->address(), c.identity));
    grpc::Status st = admin->RevokeCertificate(Context().get(), req, &resp);
    EXPECT_EQ(st.error_code(), c.code) << c.message << ": " << st.error_message();
    EXPECT_THAT(st.error_message(), HasSubstr(c.message));
    ++expected_increase[absl::StrCat("RevokeCertificate ", StatusCodeName(static_cast<int>(c.code)))];
  }
  auto counts_after = stats();
  for (const auto& [key, n] : expected_increase) EXPECT_EQ(counts_after[key] - counts_before[key], n) << key;
  EXPECT_EQ(State(), state);
  absl::SleepFor(absl::Milliseconds(1500));  // a CRL caused by a refusal would be made by now
  EXPECT_EQ(server_->Crl().crl_number(), number);
  EXPECT_EQ(Db(absl::StrCat("SELECT status FROM certificates WHERE serial = '", Canonical(cert.serial_hex()), "'")),
            "valid");
}

// The command line: revoke (table and --json), crl (summary, --json, -o with --pem and DER), export (PEM chain and
// PKCS#7), keygen --passphrase-file (encrypted PKCS#8 that OpenSSL opens with the passphrase and only with it).
TEST_F(RevocationTest, TheCommandLineRevokesFetchesTheCrlExportsAndEncryptsKeys) {
  const std::string dir = testing::TempDir("revocation-cli");
  ASSERT_TRUE(tls::WriteCredentials(dir + "/admin", ca_->station_ca.certificate_pem, ca_->StationCredentials("admin"))
                  .ok());
  ASSERT_TRUE(
      tls::WriteCredentials(dir + "/station", ca_->station_ca.certificate_pem, ca_->StationCredentials("station-1"))
          .ok());
  auto cli = [&](std::vector<std::string> args, const std::string& who = "admin") {
    std::vector<std::string> argv = {testing::ClientBinary()};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--server", server_->address(), "--tls-dir", dir + "/" + who});
    return testing::RunCommand(argv);
  };

  // keygen with a passphrase, then sign the CSR it made.
  ASSERT_TRUE(WriteFile(dir + "/pass", "correct horse battery staple\n").ok());
  ASSERT_TRUE(WriteFile(dir + "/wrong", "not it\n").ok());
  auto keygen = testing::RunCommand({testing::ClientBinary(), "keygen", "--subject", "/CN=CLI-DEVICE", "--key-out",
                                     dir + "/device.key", "--csr-out", dir + "/device.csr", "--passphrase-file",
                                     dir + "/pass"});
  ASSERT_EQ(keygen.exit_code, 0) << keygen.output;
  const std::string key_pem = *ReadFile(dir + "/device.key");
  EXPECT_TRUE(absl::StartsWith(key_pem, "-----BEGIN ENCRYPTED PRIVATE KEY-----")) << key_pem;
  auto parsed = testing::RunCommand({"/usr/bin/openssl", "asn1parse", "-in", dir + "/device.key"});
  for (const char* alg : {"PBES2", "PBKDF2", "hmacWithSHA256", "aes-256-cbc"}) EXPECT_THAT(parsed.output, HasSubstr(alg));
  auto opened = testing::RunCommand({"/usr/bin/openssl", "pkey", "-in", dir + "/device.key", "-passin",
                                     "file:" + dir + "/pass", "-noout"});
  EXPECT_EQ(opened.exit_code, 0) << opened.output;
  auto refused_key = testing::RunCommand({"/usr/bin/openssl", "pkey", "-in", dir + "/device.key", "-passin",
                                          "file:" + dir + "/wrong", "-noout"});
  EXPECT_NE(refused_key.exit_code, 0);
  ASSERT_TRUE(WriteFile(dir + "/empty", "\n").ok());
  auto empty = testing::RunCommand({testing::ClientBinary(), "keygen", "--subject", "/CN=X", "--key-out",
                                    dir + "/x.key", "--csr-out", dir + "/x.csr", "--passphrase-file", dir + "/empty"});
  EXPECT_EQ(empty.exit_code, 1);
  EXPECT_THAT(empty.output, HasSubstr("the first line (the passphrase) is empty"));
  auto sign = cli({"sign", "--csr", dir + "/device.csr", "--out", dir + "/device.pem"}, "station");
  ASSERT_EQ(sign.exit_code, 0) << sign.output;
  auto cert = ParseCertificatesPem(*ReadFile(dir + "/device.pem"), "device.pem");
  ASSERT_TRUE(cert.ok());
  OsslPtr<BIGNUM> bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber((*cert)[0].get()), nullptr));
  char* hex = BN_bn2hex(bn.get());
  const std::string serial = hex;
  OPENSSL_free(hex);

  // export: PEM (certificate, then the chain) and PKCS#7.
  auto exported = cli({"export", serial, "-o", dir + "/export.pem"});
  ASSERT_EQ(exported.exit_code, 0) << exported.output;
  auto bundle = ParseCertificatesPem(*ReadFile(dir + "/export.pem"), "export.pem");
  ASSERT_TRUE(bundle.ok());
  ASSERT_EQ(bundle->size(), 2u);  // the device certificate and the issuing CA
  EXPECT_EQ(CertificateDer((*bundle)[0].get()), CertificateDer((*cert)[0].get()));
  auto p7 = cli({"export", serial, "--pkcs7", "-o", dir + "/export.p7b"});
  ASSERT_EQ(p7.exit_code, 0) << p7.output;
  auto printed = testing::RunCommand({"/usr/bin/openssl", "pkcs7", "-in", dir + "/export.p7b", "-print_certs", "-noout"});
  EXPECT_EQ(printed.exit_code, 0) << printed.output;
  EXPECT_THAT(printed.output, HasSubstr("subject=CN = CLI-DEVICE"));
  auto unknown = cli({"export", "0123456789ABCDEF"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_THAT(unknown.output, HasSubstr("export failed: NOT_FOUND: no certificate with serial 0123456789ABCDEF"));

  // revoke: table, then --json for the idempotent second call; a bad reason name is refused by the client.
  auto revoke = cli({"revoke", serial, "--reason", "key-compromise"});
  ASSERT_EQ(revoke.exit_code, 0) << revoke.output;
  EXPECT_THAT(revoke.output, HasSubstr("status:     revoked\n"));
  EXPECT_THAT(revoke.output, HasSubstr("reason:     keyCompromise\n"));
  auto again = cli({"revoke", serial, "--reason", "superseded", "--json"});
  ASSERT_EQ(again.exit_code, 0) << again.output;
  auto json = nlohmann::json::parse(again.output.substr(again.output.find('{')));
  EXPECT_EQ(json["already_revoked"], true);
  EXPECT_EQ(json["reason"], "keyCompromise");
  EXPECT_EQ(json["reason_code"], 1);
  auto bad_name = cli({"revoke", serial, "--reason", "lost-it"});
  EXPECT_EQ(bad_name.exit_code, 1);
  EXPECT_THAT(bad_name.output, HasSubstr("--reason 'lost-it' is not a revocation reason; use one of unspecified, "
                                         "key-compromise"));
  auto hold = cli({"revoke", serial, "--reason", "certificate-hold"});
  EXPECT_EQ(hold.exit_code, 1);
  EXPECT_THAT(hold.output, HasSubstr("revoke failed: INVALID_ARGUMENT: reason certificateHold (6) is not supported"));
  auto by_station = cli({"revoke", serial}, "station");
  EXPECT_EQ(by_station.exit_code, 1);
  EXPECT_THAT(by_station.output, HasSubstr("PERMISSION_DENIED"));

  // crl: wait until it lists the serial; the summary names it; -o writes PEM or DER that OpenSSL reads.
  server_->WaitForCrl([&](const ParsedCrl& c) { return c.reasons.contains(serial); });
  auto summary = cli({"crl"}, "station");
  ASSERT_EQ(summary.exit_code, 0) << summary.output;
  EXPECT_THAT(summary.output, HasSubstr("crl_number:  "));
  EXPECT_THAT(summary.output, ::testing::ContainsRegex(serial + " +[0-9T:Z-]+ +keyCompromise"));
  auto crl_json = cli({"crl", "--json"}, "station");
  ASSERT_EQ(crl_json.exit_code, 0) << crl_json.output;
  auto j = nlohmann::json::parse(crl_json.output.substr(crl_json.output.find('{')));
  bool listed = false;
  for (const auto& e : j["entries"]) listed |= e["serial_hex"] == serial && e["reason"] == "keyCompromise";
  EXPECT_TRUE(listed) << crl_json.output;
  auto pem = cli({"crl", "--pem", "-o", dir + "/ca.crl"}, "station");
  ASSERT_EQ(pem.exit_code, 0) << pem.output;
  auto der = cli({"crl", "-o", dir + "/ca.crl.der"}, "station");
  ASSERT_EQ(der.exit_code, 0) << der.output;
  EXPECT_EQ(PemEncode("X509 CRL", *ReadFile(dir + "/ca.crl.der")), *ReadFile(dir + "/ca.crl"));
  auto verify = testing::RunCommand({"/usr/bin/openssl", "verify", "-crl_check", "-CAfile", ca_->root_pem,
                                     "-untrusted", ca_->chain_pem, "-CRLfile", dir + "/ca.crl", dir + "/device.pem"});
  EXPECT_NE(verify.exit_code, 0);
  EXPECT_THAT(verify.output, HasSubstr("certificate revoked"));
}

// GetCrl is public data: a station may read it, an identity no access rule names may not.
TEST_F(RevocationTest, GetCrlIsForEveryKnownIdentity) {
  for (const char* who : {"station-1", "admin", "line1-st1"}) {
    v1::GetCrlResponse resp;
    auto stub = v1::CertificateAuthority::NewStub(ca_->Channel(server_->address(), who));
    EXPECT_TRUE(stub->GetCrl(Context().get(), {}, &resp).ok()) << who;
    EXPECT_FALSE(resp.crl_der().empty());
  }
  v1::GetCrlResponse resp;
  auto stub = v1::CertificateAuthority::NewStub(ca_->Channel(server_->address(), "intruder"));
  grpc::Status st = stub->GetCrl(Context().get(), {}, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(st.error_message(), HasSubstr("identity 'intruder' may not call GetCrl"));
}

// 1,000 revocations as fast as one administrator can send them produce a handful of CRLs, not 1,000: the CRL
// number (one per CRL made) moves by at most one per min_interval (1 s) of the burst, plus one.
TEST_F(RevocationTest, ABurstOfRevocationsIsCoalesced) {
  // 1,000 certificates recorded straight into the store (signing them is not what this test is about).
  const std::string serial = Canonical(server_->Issue("BURST-ISSUER").serial_hex());
  const std::string issuer = Db(absl::StrCat("SELECT issuer_id FROM certificates WHERE serial = '", serial, "'"));
  ASSERT_EQ(issuer.size(), 64u);
  ASSERT_EQ(testing::SqliteExec(*db_, absl::StrCat(
                                         "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < "
                                         "1000) INSERT INTO certificates (issuer_id, serial, subject, sans, "
                                         "not_before, not_after, spki_sha256, csr_sha256, station, profile, "
                                         "request_id, der, issued_at) SELECT '",
                                         issuer,
                                         "', printf('B%07X', i), 'CN=burst', '[]', 0, 4000000000, '', '', "
                                         "'station-1', 'device', 'burst-' || i, x'3000', 0 FROM n")),
            "");
  server_->WaitForCrl([](const ParsedCrl&) { return true; });
  absl::SleepFor(absl::Milliseconds(1500));
  const uint64_t before = server_->Crl().crl_number();
  absl::Time start = absl::Now();
  for (int i = 1; i <= 1000; ++i) {
    v1::RevokeCertificateResponse resp;
    grpc::Status st = server_->Revoke(absl::StrFormat("B%07X", i), v1::REVOCATION_REASON_SUPERSEDED, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  const double burst_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  v1::GetCrlResponse crl = server_->WaitForCrl([](const ParsedCrl& c) {
    int n = 0;
    for (const auto& [serial, reason] : c.reasons) n += serial[0] == 'B' && reason == 4;
    return n == 1000;
  });
  const uint64_t made = crl.crl_number() - before;
  std::cerr << "1,000 revocations in " << burst_seconds << " s produced " << made << " CRLs\n";
  EXPECT_GE(made, 1u);
  EXPECT_LE(made, static_cast<uint64_t>(burst_seconds) + 2);
  EXPECT_LT(made, 100u);
  EXPECT_TRUE(testing::StrictParseCrl(crl.crl_der()).ok()) << testing::StrictParseCrl(crl.crl_der());
}

// The CRL number only grows: across a restart (which serves the stored CRL at once, the same bytes) and across
// two server processes on one database (a revocation through either shows in both, numbers never repeat).
TEST(RevocationRestartTest, TheCrlNumberOnlyIncreasesAcrossRestartsAndProcesses) {
  auto ca = TestCa::Create("ec-p256");
  ASSERT_TRUE(ca.ok()) << ca.status();
  const std::string db = ca->dir + "/linesign.db";
  auto first = Server::Start(*ca, db);
  ASSERT_TRUE(first.ok()) << first.status();
  v1::SignCsrResponse a = (*first)->Issue("RESTART-A");
  v1::SignCsrResponse b = (*first)->Issue("RESTART-B");
  v1::RevokeCertificateResponse resp;
  ASSERT_TRUE((*first)->Revoke(a.serial_hex(), 1, &resp).ok());
  const std::string serial_a = Canonical(a.serial_hex()), serial_b = Canonical(b.serial_hex());
  v1::GetCrlResponse before = (*first)->WaitForCrl([&](const ParsedCrl& c) { return c.reasons.contains(serial_a); });
  auto stopped = (*first)->process()->Stop(SIGTERM);
  EXPECT_EQ(stopped.exit_code, 0) << stopped.output;

  auto second = Server::Start(*ca, db);
  ASSERT_TRUE(second.ok()) << second.status();
  v1::GetCrlResponse served = (*second)->Crl();
  EXPECT_EQ(served.crl_number(), before.crl_number());
  EXPECT_EQ(served.crl_der(), before.crl_der());

  // A second process on the same database, beside it.
  auto third = Server::Start(*ca, db);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ((*third)->Crl().crl_number(), before.crl_number());
  ASSERT_TRUE((*third)->Revoke(b.serial_hex(), 3, &resp).ok());
  auto both = [&](const ParsedCrl& c) { return c.reasons.contains(serial_a) && c.reasons.contains(serial_b); };
  v1::GetCrlResponse from_third = (*third)->WaitForCrl(both);
  v1::GetCrlResponse from_second = (*second)->WaitForCrl(both);  // made by `third`, or by `second` itself
  EXPECT_GT(from_third.crl_number(), before.crl_number());
  EXPECT_GT(from_second.crl_number(), before.crl_number());
  EXPECT_EQ(ParseCrl(from_second.crl_der()).reasons[serial_b], 3);
  EXPECT_TRUE(testing::StrictParseCrl(from_second.crl_der()).ok());
  // Numbers never repeat for different CRLs.
  if (from_second.crl_number() == from_third.crl_number()) {
    EXPECT_EQ(from_second.crl_der(), from_third.crl_der());
  }
  const uint64_t top = std::max(from_second.crl_number(), from_third.crl_number());
  (*third)->process()->Stop(SIGTERM);
  (*second)->process()->Stop(SIGTERM);
  auto fourth = Server::Start(*ca, db);
  ASSERT_TRUE(fourth.ok()) << fourth.status();
  EXPECT_GE((*fourth)->Crl().crl_number(), top);
  EXPECT_EQ(testing::SqliteScalar(db, "SELECT COUNT(*) FROM crls"), "1");  // only the latest is kept
}

}  // namespace
}  // namespace linesign
