// End to end: the real linesign-server binary, a SoftHSM2 token made by the real ceremony script, real gRPC
// over loopback, a real SQLite file, and OpenSSL (and GnuTLS's certtool) verifying what comes back.
#include <grpcpp/grpcpp.h>
#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <map>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/openssl_util.h"
#include "common/utf8.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "hsm/pkcs11_module.h"
#include "linesign/v1/admin.grpc.pb.h"
#include "linesign/v1/ca.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "server/config/config.h"
#include "tests/testing/certs.h"
#include "tests/testing/server_process.h"
#include "tests/testing/strict_parse.h"
#include "tests/testing/test_ca.h"

namespace linesign {
namespace {

using ::testing::HasSubstr;
using testing::ServerProcess;
using testing::TestCa;

class EndToEndTest : public ::testing::Test {
 public:
  static const TestCa& Ca() { return *ca_; }
  static const std::string& Address() { return server_->address(); }

 protected:
  static void SetUpTestSuite() {
    auto ca = TestCa::Create("ec-p256");
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = new TestCa(*ca);
    db_ = new std::string(ca_->dir + "/linesign.db");
    std::string config = testing::WriteConfig(ca_->dir, config::ToYaml(ca_->Config(*db_)));
    auto server = ServerProcess::Start({"--config", config});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
    stub_ = v1::CertificateAuthority::NewStub(
                ca_->Channel(server_->address()))
                .release();
  }
  static void TearDownTestSuite() {
    delete stub_;
    if (server_ != nullptr) {
      auto r = server_->Stop(SIGTERM);
      EXPECT_EQ(r.exit_code, 0) << r.output;
      delete server_;
    }
    delete db_;
    delete ca_;
  }

  // Every certificate a test receives is checked by strict parsers when the test ends (testing::StrictParse).
  void TearDown() override {
    EXPECT_TRUE(testing::StrictParseAll(*issued_).ok()) << testing::StrictParseAll(*issued_);
    issued_->clear();
  }
  static void Issued(const std::string& der) {
    if (!der.empty()) issued_->push_back(der);
  }

  static grpc::Status Sign(const v1::SignCsrRequest& req, v1::SignCsrResponse* resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    grpc::Status st = stub_->SignCsr(&ctx, req, resp);
    if (st.ok()) Issued(resp->certificate_der());
    return st;
  }
  static v1::SignCsrRequest Request(const std::string& der, const std::string& id, const std::string& profile = "") {
    v1::SignCsrRequest req;
    req.set_csr_der(der);
    req.set_request_id(id);
    req.set_profile(profile);
    return req;
  }
  static int64_t RecordCount() { return std::stoll(testing::SqliteScalar(*db_, "SELECT COUNT(*) FROM certificates")); }

  static TestCa* ca_;
  static std::string* db_;
  static inline std::vector<std::string>* issued_ = new std::vector<std::string>;
  static ServerProcess* server_;
  static v1::CertificateAuthority::Stub* stub_;
};
TestCa* EndToEndTest::ca_ = nullptr;
std::string* EndToEndTest::db_ = nullptr;
ServerProcess* EndToEndTest::server_ = nullptr;
v1::CertificateAuthority::Stub* EndToEndTest::stub_ = nullptr;

std::string ExtensionText(X509* cert, int nid) {
  int idx = X509_get_ext_by_NID(cert, nid, -1);
  if (idx < 0) return "";
  X509_EXTENSION* ext = X509_get_ext(cert, idx);
  OsslPtr<BIO> bio(BIO_new(BIO_s_mem()));
  X509V3_EXT_print(bio.get(), ext, 0, 0);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return absl::StrCat(X509_EXTENSION_get_critical(ext) ? "critical " : "", std::string(data, n));
}

TEST_F(EndToEndTest, IssuedCertificateVerifiesAndFollowsTheProfile) {
  std::string csr = testing::Csr("ec-p256", "/CN=DEVICE000001/O=Acme Devices", {"DNS:device1.example", "IP:10.1.2.3"});
  v1::SignCsrResponse resp;
  ASSERT_TRUE(Sign(Request(csr, "e2e-profile-1"), &resp).ok());
  auto cert = testing::ParseDer(resp.certificate_der());
  ASSERT_NE(cert, nullptr);
  EXPECT_EQ(testing::VerifyChain(cert.get(), ca_->root_pem, ca_->chain_pem), "");
  EXPECT_EQ(X509_get_version(cert.get()), 2);  // v3

  char subject[256];
  X509_NAME_oneline(X509_get_subject_name(cert.get()), subject, sizeof(subject));
  EXPECT_EQ(std::string(subject), "/CN=DEVICE000001/O=Acme Devices");
  auto chain = ParseCertificatesPem(resp.chain_pem(), "chain");
  ASSERT_TRUE(chain.ok());
  EXPECT_EQ(X509_NAME_cmp(X509_get_issuer_name(cert.get()), X509_get_subject_name((*chain)[0].get())), 0);

  EXPECT_EQ(ExtensionText(cert.get(), NID_basic_constraints), "critical CA:FALSE");
  EXPECT_EQ(ExtensionText(cert.get(), NID_key_usage), "critical Digital Signature");
  EXPECT_EQ(ExtensionText(cert.get(), NID_ext_key_usage), "TLS Web Client Authentication");
  EXPECT_EQ(ExtensionText(cert.get(), NID_subject_alt_name), "DNS:device1.example, IP Address:10.1.2.3");
  EXPECT_FALSE(ExtensionText(cert.get(), NID_subject_key_identifier).empty());
  const ASN1_OCTET_STRING* aki = X509_get0_authority_key_id(cert.get());
  const ASN1_OCTET_STRING* ca_ski = X509_get0_subject_key_id((*chain)[0].get());
  ASSERT_NE(aki, nullptr);
  ASSERT_NE(ca_ski, nullptr);
  EXPECT_EQ(ASN1_OCTET_STRING_cmp(aki, ca_ski), 0);

  // Validity: backdated 300 s, 365 days long.
  int days = 0, secs = 0;
  ASSERT_EQ(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(cert.get()), X509_get0_notAfter(cert.get())), 1);
  EXPECT_EQ(days * 86400 + secs, 365 * 86400 + 300);
  EXPECT_EQ(resp.not_after().seconds() - resp.not_before().seconds(), 365 * 86400 + 300);
  int64_t now = absl::ToUnixSeconds(absl::Now());
  EXPECT_NEAR(resp.not_before().seconds(), now - 300, 30);

  // The public key is the CSR's, the serial matches the certificate.
  OsslPtr<BIGNUM> serial(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert.get()), nullptr));
  char* hex = BN_bn2hex(serial.get());
  EXPECT_EQ(resp.serial_hex(), hex);
  OPENSSL_free(hex);
  EXPECT_EQ(resp.certificate_pem(), PemEncode("CERTIFICATE", resp.certificate_der()));
  EXPECT_FALSE(resp.replayed());
}

TEST_F(EndToEndTest, SerialProfileAddsKeyAgreementCrlDistributionPointAndPolicy) {
  v1::SignCsrResponse resp;
  grpc::Status st = Sign(Request(testing::Csr("ec-p256", "/CN=AB12CD34EF56/O=Acme", {"DNS:unit-1.devices.example"}),
                                 "e2e-serial-profile-1", "serial"),
                         &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  auto cert = testing::ParseDer(resp.certificate_der());
  ASSERT_NE(cert, nullptr);
  EXPECT_EQ(testing::VerifyChain(cert.get(), ca_->root_pem, ca_->chain_pem), "");
  EXPECT_EQ(ExtensionText(cert.get(), NID_key_usage), "critical Digital Signature, Key Agreement");
  EXPECT_THAT(ExtensionText(cert.get(), NID_crl_distribution_points),
              HasSubstr("URI:http://crl.example.com/linesign.crl"));
  EXPECT_THAT(ExtensionText(cert.get(), NID_certificate_policies), HasSubstr("Policy: 1.3.6.1.4.1.55555.1.1"));
  EXPECT_EQ(ExtensionText(cert.get(), NID_subject_alt_name), "DNS:unit-1.devices.example");
}

TEST_F(EndToEndTest, ServerProfileGivesServerAuthAndShortValidity) {
  v1::SignCsrResponse resp;
  ASSERT_TRUE(Sign(Request(testing::Csr("ec-p384", "/CN=gateway", {"DNS:gw.example"}), "e2e-server-1", "server"),
                   &resp)
                  .ok());
  auto cert = testing::ParseDer(resp.certificate_der());
  EXPECT_EQ(ExtensionText(cert.get(), NID_ext_key_usage), "TLS Web Server Authentication");
  EXPECT_EQ(resp.not_after().seconds() - resp.not_before().seconds(), 30 * 86400 + 300);
}

TEST_F(EndToEndTest, EveryDeviceKeyTypeIsIssued) {
  for (const char* alg : {"ec-p256", "ec-p384", "ed25519", "rsa-2048", "rsa-4096"}) {
    v1::SignCsrResponse resp;
    grpc::Status st = Sign(Request(testing::Csr(alg, "/CN=KEYTYPE"), absl::StrCat("e2e-keytype-", alg)), &resp);
    ASSERT_TRUE(st.ok()) << alg << ": " << st.error_message();
    auto cert = testing::ParseDer(resp.certificate_der());
    EXPECT_EQ(testing::VerifyChain(cert.get(), ca_->root_pem, ca_->chain_pem), "") << alg;
  }
}

TEST_F(EndToEndTest, SerialsArePositiveShortAndUniqueOverAThousandIssues) {
  std::string csr = testing::Csr("ec-p256", "/CN=SERIALS");
  std::set<std::string> serials;
  for (int i = 0; i < 1000; ++i) {
    v1::SignCsrResponse resp;
    grpc::Status st = Sign(Request(csr, absl::StrCat("e2e-serial-", i)), &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    auto cert = testing::ParseDer(resp.certificate_der());
    const ASN1_INTEGER* serial = X509_get0_serialNumber(cert.get());
    ASSERT_EQ(ASN1_STRING_type(serial), V_ASN1_INTEGER);  // V_ASN1_NEG_INTEGER for negative ones
    ASSERT_LE(ASN1_STRING_length(serial), 20);
    ASSERT_GE(ASN1_STRING_length(serial), 8);  // at least 64 bits
    serials.insert(resp.serial_hex());
  }
  EXPECT_EQ(serials.size(), 1000u);
}

TEST_F(EndToEndTest, RecordIsInSqliteBeforeTheAnswer) {
  std::string csr = testing::Csr("ec-p256", "/CN=RECORDED");
  v1::SignCsrResponse resp;
  ASSERT_TRUE(Sign(Request(csr, "e2e-record-1"), &resp).ok());
  std::string where = absl::StrCat(" FROM certificates WHERE serial = '", resp.serial_hex(), "'");
  EXPECT_EQ(testing::SqliteScalar(*db_, "SELECT subject" + where), "CN=RECORDED");
  EXPECT_EQ(testing::SqliteScalar(*db_, "SELECT request_id" + where), "e2e-record-1");
  EXPECT_EQ(testing::SqliteScalar(*db_, "SELECT profile" + where), "device");
  EXPECT_EQ(testing::SqliteScalar(*db_, "SELECT hex(der)" + where), Hex(resp.certificate_der()));
  EXPECT_EQ(std::stoll(testing::SqliteScalar(*db_, "SELECT not_after" + where)), resp.not_after().seconds());
  auto cert = testing::ParseDer(resp.certificate_der());
  EXPECT_EQ(testing::SqliteScalar(*db_, "SELECT spki_sha256" + where),
            Hex(Sha256(PublicKeyDer(X509_get0_pubkey(cert.get())))));
  EXPECT_EQ(testing::SqliteScalar(*db_, "PRAGMA journal_mode"), "wal");
}

TEST_F(EndToEndTest, RetryWithSameRequestIdReturnsTheSameCertificate) {
  std::string csr = testing::Csr("ec-p256", "/CN=RETRY");
  v1::SignCsrResponse first, second;
  ASSERT_TRUE(Sign(Request(csr, "e2e-retry-1"), &first).ok());
  int64_t before = RecordCount();
  ASSERT_TRUE(Sign(Request(csr, "e2e-retry-1"), &second).ok());
  EXPECT_EQ(second.certificate_der(), first.certificate_der());
  EXPECT_TRUE(second.replayed());
  EXPECT_EQ(RecordCount(), before);

  v1::SignCsrResponse other;
  grpc::Status st = Sign(Request(testing::Csr("ec-p256", "/CN=OTHER"), "e2e-retry-1"), &other);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_THAT(st.error_message(), HasSubstr("different CSR"));
  EXPECT_EQ(RecordCount(), before);
}

TEST_F(EndToEndTest, CaKeyOnTheTokenIsSensitiveAndNotExtractable) {
  auto module = hsm::Pkcs11Module::Load(ca_->module, {{"SOFTHSM2_CONF", ca_->softhsm2_conf}});
  ASSERT_TRUE(module.ok()) << module.status();
  CK_FUNCTION_LIST_PTR f = (*module)->functions();
  CK_ULONG n = 8;
  CK_SLOT_ID slots[8];
  ASSERT_EQ(f->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
  ASSERT_GE(n, 1u);
  CK_SESSION_HANDLE session;
  ASSERT_EQ(f->C_OpenSession(slots[0], CKF_SERIAL_SESSION, nullptr, nullptr, &session), CKR_OK);
  std::string pin = *ReadFile(ca_->pin_file);
  while (!pin.empty() && (pin.back() == '\n' || pin.back() == '\r')) pin.pop_back();
  ASSERT_EQ(f->C_Login(session, CKU_USER, reinterpret_cast<CK_UTF8CHAR_PTR>(pin.data()), pin.size()), CKR_OK);
  CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
  CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof(cls)}};
  ASSERT_EQ(f->C_FindObjectsInit(session, tmpl, 1), CKR_OK);
  CK_OBJECT_HANDLE key;
  CK_ULONG found = 0;
  ASSERT_EQ(f->C_FindObjects(session, &key, 1, &found), CKR_OK);
  f->C_FindObjectsFinal(session);
  ASSERT_EQ(found, 1u);
  CK_BBOOL sensitive = CK_FALSE, extractable = CK_TRUE, never_extractable = CK_FALSE;
  CK_ATTRIBUTE attrs[] = {{CKA_SENSITIVE, &sensitive, sizeof(sensitive)},
                          {CKA_EXTRACTABLE, &extractable, sizeof(extractable)},
                          {CKA_NEVER_EXTRACTABLE, &never_extractable, sizeof(never_extractable)}};
  ASSERT_EQ(f->C_GetAttributeValue(session, key, attrs, 3), CKR_OK);
  EXPECT_EQ(sensitive, CK_TRUE);
  EXPECT_EQ(extractable, CK_FALSE);
  EXPECT_EQ(never_extractable, CK_TRUE);
  // The value itself cannot be read.
  char value[512];
  CK_ATTRIBUTE value_attr = {CKA_VALUE, value, sizeof(value)};
  EXPECT_EQ(f->C_GetAttributeValue(session, key, &value_attr, 1), CKR_ATTRIBUTE_SENSITIVE);
  f->C_CloseSession(session);
}

TEST_F(EndToEndTest, GetCaChainReturnsTheIntermediate) {
  grpc::ClientContext ctx;
  v1::GetCaChainResponse resp;
  ASSERT_TRUE(stub_->GetCaChain(&ctx, {}, &resp).ok());
  auto chain_file = ReadFile(ca_->chain_pem);
  auto from_file = ParseCertificatesPem(*chain_file, "file");
  auto from_server = ParseCertificatesPem(resp.chain_pem(), "server");
  ASSERT_TRUE(from_file.ok() && from_server.ok());
  ASSERT_EQ(from_server->size(), from_file->size());
  EXPECT_EQ(X509_cmp((*from_server)[0].get(), (*from_file)[0].get()), 0);
  EXPECT_EQ(resp.issuer_certificate_der(), CertificateDer((*from_file)[0].get()));
}

// The station flow of the README: plain `openssl req`, `linesign sign`, `openssl verify`, `certtool --verify`.
TEST_F(EndToEndTest, OpensslReqThroughTheClientVerifiesWithOpensslAndGnutls) {
  std::string dir = testing::TempDir("linesign-station");
  auto gen = testing::RunCommand({"/usr/bin/openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                                  "ec_paramgen_curve:P-256", "-nodes", "-keyout", dir + "/device.key", "-subj",
                                  "/CN=STATION0001", "-out", dir + "/device.csr"});
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  const tls::KeyAndCertificate station = ca_->StationCredentials("station-1");
  ASSERT_TRUE(tls::WriteCredentials(dir + "/station", ca_->station_ca.certificate_pem, station).ok());
  auto sign = testing::RunCommand({testing::ClientBinary(), "sign", "--server", server_->address(), "--tls-dir",
                                   dir + "/station", "--csr", dir + "/device.csr", "--out", dir + "/device.crt",
                                   "--chain-out", dir + "/chain.pem"});
  ASSERT_EQ(sign.exit_code, 0) << sign.output;
  EXPECT_THAT(sign.output, HasSubstr("issued serial"));
  auto verify = testing::RunCommand({"/usr/bin/openssl", "verify", "-CAfile", ca_->root_pem, "-untrusted",
                                     dir + "/chain.pem", dir + "/device.crt"});
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
  EXPECT_THAT(verify.output, HasSubstr(": OK"));
  // certtool wants the whole chain, leaf first, in one file, and the root as the trust anchor.
  auto leaf = ReadFile(dir + "/device.crt");
  auto chain = ReadFile(dir + "/chain.pem");
  if (auto parsed = ParseCertificatesPem(*leaf, "device.crt"); parsed.ok()) Issued(CertificateDer((*parsed)[0].get()));
  ASSERT_TRUE(WriteFile(dir + "/bundle.pem", *leaf + *chain).ok());
  auto certtool = testing::RunCommand({"/usr/bin/certtool", "--verify", "--load-ca-certificate", ca_->root_pem,
                                       "--infile", dir + "/bundle.pem"});
  EXPECT_EQ(certtool.exit_code, 0) << certtool.output;
  EXPECT_THAT(certtool.output, HasSubstr("Chain verification output: Verified"));

  auto err = testing::RunCommand({testing::ClientBinary(), "sign", "--server", server_->address(), "--tls-dir",
                                  dir + "/station", "--csr", dir + "/device.key", "--out", dir + "/x.crt"});
  EXPECT_EQ(err.exit_code, 1);
  EXPECT_THAT(err.output, HasSubstr("linesign: sign failed: INVALID_ARGUMENT: PEM label is 'PRIVATE KEY'"));
}

TEST_F(EndToEndTest, StreamAnswersEveryRequestByIdWithErrorsInline) {
  int64_t before = RecordCount();
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  auto stream = stub_->SignCsrStream(&ctx);
  constexpr int kRequests = 400;  // more than the per-stream window of 128
  std::vector<std::string> csrs;
  for (int i = 0; i < 8; ++i) csrs.push_back(testing::Csr("ec-p256", absl::StrCat("/CN=STREAM", i)));
  std::thread writer([&] {
    for (int i = 0; i < kRequests; ++i) {
      v1::SignCsrRequest req;
      req.set_request_id(absl::StrCat("stream-", i));
      if (i % 50 == 7) {
        req.set_csr_der("garbage");  // refused inline, the stream goes on
      } else {
        req.set_csr_der(csrs[i % csrs.size()]);
      }
      ASSERT_TRUE(stream->Write(req));
    }
    stream->WritesDone();
  });
  std::map<std::string, v1::SignCsrStreamResponse> answers;
  v1::SignCsrStreamResponse resp;
  while (stream->Read(&resp)) {
    EXPECT_TRUE(answers.emplace(resp.request_id(), resp).second) << "answered twice: " << resp.request_id();
  }
  writer.join();
  grpc::Status st = stream->Finish();
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(answers.size(), static_cast<size_t>(kRequests));
  std::set<std::string> serials;
  int refused = 0;
  for (int i = 0; i < kRequests; ++i) {
    const auto& a = answers[absl::StrCat("stream-", i)];
    if (i % 50 == 7) {
      ASSERT_TRUE(a.has_error());
      EXPECT_EQ(a.error().code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
      EXPECT_THAT(a.error().message(), HasSubstr("not a DER PKCS#10"));
      ++refused;
      continue;
    }
    ASSERT_TRUE(a.has_certificate()) << a.error().message();
    Issued(a.certificate().certificate_der());
    EXPECT_EQ(a.certificate().request_id(), a.request_id());
    auto cert = testing::ParseDer(a.certificate().certificate_der());
    ASSERT_NE(cert, nullptr);
    // The answer is for this request: the certificate carries this request's public key.
    auto csr_der = csrs[i % csrs.size()];
    const unsigned char* p = reinterpret_cast<const unsigned char*>(csr_der.data());
    OsslPtr<X509_REQ> req(d2i_X509_REQ(nullptr, &p, csr_der.size()));
    EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(cert.get()), X509_REQ_get0_pubkey(req.get())), 1);
    if (i < 60) {
      EXPECT_EQ(testing::VerifyChain(cert.get(), ca_->root_pem, ca_->chain_pem), "");
    }
    serials.insert(a.certificate().serial_hex());
  }
  EXPECT_EQ(serials.size(), static_cast<size_t>(kRequests - refused));
  EXPECT_EQ(RecordCount(), before + kRequests - refused);
}

// ---- Bad input: each refused with its own message, nothing recorded, and the server keeps serving. ----

struct BadCase {
  std::string name;
  std::function<v1::SignCsrRequest()> request;
  grpc::StatusCode code;
  std::string message;
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

// CsrWithRawCn makes a P-256 CSR whose CN holds exactly `cn` (which may contain a NUL byte) as a UTF8String, or
// as the string type `type`, unchecked.
std::string CsrWithRawCn(const std::string& cn, int type = V_ASN1_UTF8STRING) {
  OsslPtr<EVP_PKEY> key(EVP_EC_gen("P-256"));
  OsslPtr<X509_REQ> req(X509_REQ_new());
  X509_NAME* name = X509_REQ_get_subject_name(req.get());
  X509_NAME_add_entry_by_txt(name, "CN", type, reinterpret_cast<const unsigned char*>(cn.data()),
                             static_cast<int>(cn.size()), -1, 0);
  X509_REQ_set_pubkey(req.get(), key.get());
  X509_REQ_sign(req.get(), key.get(), EVP_sha256());
  return ToDer(i2d_X509_REQ, static_cast<const X509_REQ*>(req.get()));
}

// CsrWithRawDnsSan makes a P-256 CSR whose one DNS SAN holds exactly `dns` (which may contain a NUL byte).
std::string CsrWithRawDnsSan(const std::string& dns) {
  OsslPtr<EVP_PKEY> key(EVP_EC_gen("P-256"));
  OsslPtr<X509_REQ> req(X509_REQ_new());
  X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req.get()), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("NULSAN"), -1, -1, 0);
  GENERAL_NAMES* names = GENERAL_NAMES_new();
  GENERAL_NAME* name = GENERAL_NAME_new();
  ASN1_IA5STRING* value = ASN1_IA5STRING_new();
  ASN1_STRING_set(value, dns.data(), static_cast<int>(dns.size()));
  GENERAL_NAME_set0_value(name, GEN_DNS, value);
  sk_GENERAL_NAME_push(names, name);
  STACK_OF(X509_EXTENSION)* exts = sk_X509_EXTENSION_new_null();
  sk_X509_EXTENSION_push(exts, X509V3_EXT_i2d(NID_subject_alt_name, 0, names));
  X509_REQ_add_extensions(req.get(), exts);
  sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  GENERAL_NAMES_free(names);
  X509_REQ_set_pubkey(req.get(), key.get());
  X509_REQ_sign(req.get(), key.get(), EVP_sha256());
  return ToDer(i2d_X509_REQ, static_cast<const X509_REQ*>(req.get()));
}

// CsrWithKeyUsage makes a P-256 CSR asking for a keyUsage extension, which no profile takes from a CSR.
std::string CsrWithKeyUsage() {
  OsslPtr<EVP_PKEY> key(EVP_EC_gen("P-256"));
  OsslPtr<X509_REQ> req(X509_REQ_new());
  X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req.get()), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("KEYUSAGE"), -1, -1, 0);
  STACK_OF(X509_EXTENSION)* exts = sk_X509_EXTENSION_new_null();
  sk_X509_EXTENSION_push(exts, X509V3_EXT_conf_nid(nullptr, nullptr, NID_key_usage, "critical,digitalSignature"));
  X509_REQ_add_extensions(req.get(), exts);
  sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  X509_REQ_set_pubkey(req.get(), key.get());
  X509_REQ_sign(req.get(), key.get(), EVP_sha256());
  return ToDer(i2d_X509_REQ, static_cast<const X509_REQ*>(req.get()));
}

// CsrSignedWith makes an RSA-2048 CSR signed with digest `md` (MD5, SHA-1: refused as too weak).
std::string CsrSignedWith(const EVP_MD* md) {
  OsslPtr<EVP_PKEY> key(EVP_RSA_gen(2048));
  OsslPtr<X509_REQ> req(X509_REQ_new());
  X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req.get()), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("WEAKDIGEST"), -1, -1, 0);
  X509_REQ_set_pubkey(req.get(), key.get());
  X509_REQ_sign(req.get(), key.get(), md);
  return ToDer(i2d_X509_REQ, static_cast<const X509_REQ*>(req.get()));
}

// CsrWithRsaExponent makes a CSR whose RSA-2048 public key has exponent `e` (signed by an unrelated key: the
// exponent is refused before the signature is looked at).
std::string CsrWithRsaExponent(unsigned long e) {
  OsslPtr<EVP_PKEY> signer(EVP_EC_gen("P-256"));
  OsslPtr<BIGNUM> n(BN_new()), exponent(BN_new());
  BN_rand(n.get(), 2048, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ODD);
  BN_set_word(exponent.get(), e);
  OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
  OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n.get());
  OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, exponent.get());
  OSSL_PARAM* params = OSSL_PARAM_BLD_to_param(bld);
  OsslPtr<EVP_PKEY_CTX> ctx(EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr));
  EVP_PKEY* raw = nullptr;
  EVP_PKEY_fromdata_init(ctx.get());
  EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params);
  OsslPtr<EVP_PKEY> key(raw);
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(bld);
  OsslPtr<X509_REQ> req(X509_REQ_new());
  X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req.get()), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("BADEXPONENT"), -1, -1, 0);
  X509_REQ_set_pubkey(req.get(), key.get());
  X509_REQ_sign(req.get(), signer.get(), EVP_sha256());
  return ToDer(i2d_X509_REQ, static_cast<const X509_REQ*>(req.get()));
}

// CsrWithPointOffCurve flips a bit of the y coordinate of a P-256 CSR's public key point.
std::string CsrWithPointOffCurve() {
  std::string der = testing::Csr("ec-p256", "/CN=OFFCURVE");
  // The uncompressed point is the 65 bytes after "03 42 00" in the SubjectPublicKeyInfo.
  size_t at = der.find(std::string("\x03\x42\x00\x04", 4));
  der[at + 4 + 63] ^= 0x01;  // the last octet of y
  return der;
}

// ToIndefiniteLength re-encodes the outer SEQUENCE with BER's indefinite length (30 80 ... 00 00).
std::string ToIndefiniteLength(const std::string& der) {
  size_t header = (static_cast<unsigned char>(der[1]) & 0x80) ? 2 + (der[1] & 0x7f) : 2;
  return std::string("\x30\x80", 2) + der.substr(header) + std::string(2, '\0');
}

// ToLongFormLength re-encodes the outer SEQUENCE's length with one more length octet than needed.
std::string ToLongFormLength(const std::string& der) {
  size_t header = (static_cast<unsigned char>(der[1]) & 0x80) ? 2 + (der[1] & 0x7f) : 2;
  size_t len = der.size() - header;
  std::string out("\x30\x83", 2);
  out += static_cast<char>(len >> 16);
  out += static_cast<char>((len >> 8) & 0xff);
  out += static_cast<char>(len & 0xff);
  return out + der.substr(header);
}

std::string Corrupt(std::string der, size_t from_end) {
  der[der.size() - from_end] ^= 0x01;
  return der;
}

std::vector<BadCase> BadCases() {
  auto req = [](std::string der, std::string profile = "") {
    v1::SignCsrRequest r;
    r.set_csr_der(std::move(der));
    r.set_request_id("bad-input");
    r.set_profile(std::move(profile));
    return r;
  };
  return {
      {"Empty", [] { v1::SignCsrRequest r; r.set_request_id("empty"); return r; }, grpc::StatusCode::INVALID_ARGUMENT, "no CSR"},
      {"RandomBytes",
       [&] {
         std::string junk(300, '\0');
         for (auto& c : junk) c = static_cast<char>(rand());
         junk[0] = 0x42;
         return req(junk);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "not a DER PKCS#10"},
      {"TruncatedDer",
       [&] {
         std::string der = testing::Csr("ec-p256", "/CN=TRUNC");
         return req(der.substr(0, der.size() - 10));
       },
       grpc::StatusCode::INVALID_ARGUMENT, "not a DER PKCS#10"},
      {"TrailingBytes", [&] { return req(testing::Csr("ec-p256", "/CN=TRAIL") + "xx"); },
       grpc::StatusCode::INVALID_ARGUMENT, "2 trailing bytes"},
      {"SignatureMismatch", [&] { return req(Corrupt(testing::Csr("ec-p256", "/CN=BADSIG"), 3)); },
       grpc::StatusCode::INVALID_ARGUMENT, "signature does not verify"},
      {"Rsa1024", [&] { return req(testing::CsrWithKeySpec("RSA", "1024", "/CN=WEAK")); },
       grpc::StatusCode::INVALID_ARGUMENT, "RSA key of 1024 bits is outside the 2048..4096"},
      {"Secp256k1", [&] { return req(testing::CsrWithKeySpec("EC", "secp256k1", "/CN=K1")); },
       grpc::StatusCode::INVALID_ARGUMENT, "unsupported EC curve secp256k1"},
      {"Oversized",
       [&] {
         v1::SignCsrRequest r;
         r.set_csr_der(std::string(64 * 1024 + 1, '\x30'));
         r.set_request_id("bad-input");
         return r;
       },
       grpc::StatusCode::INVALID_ARGUMENT, "exceeds the limit of 65536 bytes"},
      {"UnknownProfile", [&] { return req(testing::Csr("ec-p256", "/CN=PROF"), "no-such-profile"); },
       grpc::StatusCode::PERMISSION_DENIED,
       "station 'station-1' may not use profile 'no-such-profile' (allowed: device, server, serial)"},
      {"MissingRequestId",
       [&] {
         v1::SignCsrRequest r = req(testing::Csr("ec-p256", "/CN=NOID"));
         r.clear_request_id();
         return r;
       },
       grpc::StatusCode::INVALID_ARGUMENT, "request_id is required"},
      {"WrongPemLabel",
       [&] {
         v1::SignCsrRequest r;
         r.set_csr_pem(PemEncode("CERTIFICATE", testing::Csr("ec-p256", "/CN=PEM")));
         r.set_request_id("bad-input");
         return r;
       },
       grpc::StatusCode::INVALID_ARGUMENT, "PEM label is 'CERTIFICATE'"},
      {"SanTypeNotAllowed", [&] { return req(testing::Csr("ec-p256", "/CN=SAN", {"URI:urn:x"})); },
       grpc::StatusCode::INVALID_ARGUMENT, "subjectAltName type uri is not allowed by profile 'device'"},
      {"SubjectAttributeNotAllowed", [&] { return req(testing::Csr("ec-p256", "/CN=ATTR/L=Berlin")); },
       grpc::StatusCode::INVALID_ARGUMENT, "subject attribute localityName is not allowed by profile 'device'"},
      {"MissingCommonName", [&] { return req(testing::Csr("ec-p256", "/O=Acme")); },
       grpc::StatusCode::INVALID_ARGUMENT, "subject attribute CN is required"},
      {"SubjectValueTooLong", [&] { return req(CsrWithRawCn(std::string(65, 'A'))); },
       grpc::StatusCode::INVALID_ARGUMENT, "subject CN of 65 bytes exceeds the limit of 64 bytes"},
      {"SubjectEmbeddedNul", [&] { return req(CsrWithRawCn(std::string("DEVICE\0evil", 11))); },
       grpc::StatusCode::INVALID_ARGUMENT,
       "subject attribute CN (UTF8String) 'DEVICE\\x00evil' holds the control character 0x00 at offset 6"},
      {"SubjectPrintableStringWithAt", [&] { return req(CsrWithRawCn("dev@ce", V_ASN1_PRINTABLESTRING)); },
       grpc::StatusCode::INVALID_ARGUMENT,
       "subject attribute CN (PrintableString) 'dev@ce' holds 0x40 at offset 3, which a PrintableString may not"},
      {"SanDnsNewline", [&] { return req(CsrWithRawDnsSan("a\nb.example")); }, grpc::StatusCode::INVALID_ARGUMENT,
       "subjectAltName dns 'a\\x0Ab.example' is not a valid DNS name: it contains the character 0x0A"},
      {"ExtensionNotTaken", [&] { return req(CsrWithKeyUsage()); }, grpc::StatusCode::INVALID_ARGUMENT,
       "CSR requests the extension X509v3 Key Usage (2.5.29.15), which profile 'device' does not take from a CSR"},
      {"PemTrailingData",
       [&] {
         v1::SignCsrRequest r;
         r.set_csr_pem(PemEncode("CERTIFICATE REQUEST", testing::Csr("ec-p256", "/CN=PEMTRAIL")) + "junk");
         r.set_request_id("bad-input");
         return r;
       },
       grpc::StatusCode::INVALID_ARGUMENT, "CSR PEM has 4 bytes of trailing data after its END line"},
      {"SanEmbeddedNul", [&] { return req(CsrWithRawDnsSan(std::string("ok.example\0.evil.example", 23))); },
       grpc::StatusCode::INVALID_ARGUMENT, "subjectAltName dns contains a NUL byte"},
      {"SanValueTooLong",
       [&] { return req(testing::Csr("ec-p256", "/CN=LONGSAN", {"DNS:" + std::string(256, 'a') + ".example"})); },
       grpc::StatusCode::INVALID_ARGUMENT, "is not a valid DNS name: it is 264 characters long, more than 253"},
      {"SubjectPatternMismatch", [&] { return req(testing::Csr("ec-p256", "/CN=device-7"), "serial"); },
       grpc::StatusCode::INVALID_ARGUMENT, "subject CN 'device-7' does not match the pattern '^[A-Z0-9]{12}$'"},
      {"SanPatternMismatch",
       [&] { return req(testing::Csr("ec-p256", "/CN=AB12CD34EF56", {"DNS:x.other.example"}), "serial"); },
       grpc::StatusCode::INVALID_ARGUMENT, "subjectAltName dns 'x.other.example' does not match"},
      {"KeyTypeNotInProfile", [&] { return req(testing::Csr("ec-p384", "/CN=AB12CD34EF56"), "serial"); },
       grpc::StatusCode::INVALID_ARGUMENT, "ec-p384 keys are not allowed by profile 'serial'"},
      {"Sha1Signature", [&] { return req(CsrSignedWith(EVP_sha1())); }, grpc::StatusCode::INVALID_ARGUMENT,
       "CSR signature algorithm sha1WithRSAEncryption is too weak"},
      {"Md5Signature", [&] { return req(CsrSignedWith(EVP_md5())); }, grpc::StatusCode::INVALID_ARGUMENT,
       "CSR signature algorithm md5WithRSAEncryption is too weak"},
      {"RsaExponentOne", [&] { return req(CsrWithRsaExponent(1)); }, grpc::StatusCode::INVALID_ARGUMENT,
       "RSA public exponent 1 is not allowed"},
      {"RsaExponentEven", [&] { return req(CsrWithRsaExponent(65538)); }, grpc::StatusCode::INVALID_ARGUMENT,
       "RSA public exponent 65538 is not allowed"},
      {"EcPointNotOnCurve", [&] { return req(CsrWithPointOffCurve()); }, grpc::StatusCode::INVALID_ARGUMENT,
       "CSR public key cannot be decoded"},
      {"IndefiniteLength", [&] { return req(ToIndefiniteLength(testing::Csr("ec-p256", "/CN=BER"))); },
       grpc::StatusCode::INVALID_ARGUMENT, "not in canonical DER"},
      {"NonMinimalLength", [&] { return req(ToLongFormLength(testing::Csr("ec-p256", "/CN=LONGFORM"))); },
       grpc::StatusCode::INVALID_ARGUMENT, "not in canonical DER"},
      {"StationNotAllowedProfile",
       [&] {
         v1::SignCsrRequest r = req(testing::Csr("ec-p256", "/CN=AB12CD34EF56"), "serial");
         r.set_request_id("as-line-station");  // sent as line1-st1 below
         return r;
       },
       grpc::StatusCode::PERMISSION_DENIED, "station 'line1-st1' may not use profile 'serial' (allowed: device)"},
  };
}

class BadInputTest : public EndToEndTest, public ::testing::WithParamInterface<BadCase> {};

uint64_t Answered(const std::string& key) {
  v1::GetStatsResponse stats;
  grpc::ClientContext ctx;
  EXPECT_TRUE(v1::Administration::NewStub(EndToEndTest::Ca().Channel(EndToEndTest::Address(), "admin"))
                  ->GetStats(&ctx, {}, &stats)
                  .ok());
  auto it = stats.answers().find(key);
  return it == stats.answers().end() ? 0 : it->second;
}

TEST_P(BadInputTest, IsRefusedWithItsOwnMessageAndRecordsNothing) {
  int64_t before = RecordCount();
  const std::string counter = absl::StrCat("SignCsr ", StatusCodeName(GetParam().code));
  uint64_t counted_before = Answered(counter);
  v1::SignCsrResponse resp;
  v1::SignCsrRequest request = GetParam().request();
  grpc::Status st;
  if (request.request_id() == "as-line-station") {
    grpc::ClientContext ctx;
    st = v1::CertificateAuthority::NewStub(Ca().Channel(Address(), "line1-st1"))->SignCsr(&ctx, request, &resp);
    if (st.ok()) Issued(resp.certificate_der());
  } else {
    st = Sign(request, &resp);
  }
  EXPECT_EQ(st.error_code(), GetParam().code) << st.error_message();
  EXPECT_THAT(st.error_message(), HasSubstr(GetParam().message));
  EXPECT_TRUE(resp.certificate_der().empty());
  EXPECT_EQ(RecordCount(), before);
  EXPECT_EQ(Answered(counter), counted_before + 1) << counter;
  // The server keeps serving.
  v1::SignCsrResponse ok;
  EXPECT_TRUE(Sign(Request(testing::Csr("ec-p256", "/CN=STILLSERVING"), "after-" + GetParam().name), &ok).ok());
}

INSTANTIATE_TEST_SUITE_P(Matrix, BadInputTest, ::testing::ValuesIn(BadCases()),
                         [](const auto& info) { return info.param.name; });

// ---- Station-controlled text and request identity: a server of its own, with an audit file and a profile that
// takes URI and email SANs. ----

class StationTextTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto ca = TestCa::Create("ec-p256");
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = new TestCa(*ca);
    v1::ServerConfig c = ca_->Config(ca_->dir + "/text.db");
    v1::Profile& names = (*c.mutable_profiles())["names"];
    names = c.profiles().at("device");
    names.add_san_types("uri");
    names.add_san_types("email");
    c.mutable_access(0)->add_profiles("names");  // station-1
    c.mutable_audit()->set_file(ca_->dir + "/audit.jsonl");
    auto server = ServerProcess::Start({"--config", testing::WriteConfig(ca_->dir, config::ToYaml(c))});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
  }
  static void TearDownTestSuite() {
    if (server_ != nullptr) {
      auto r = server_->Stop(SIGTERM);
      EXPECT_EQ(r.exit_code, 0) << r.output;
      delete server_;
    }
    delete ca_;
  }
  static std::unique_ptr<v1::CertificateAuthority::Stub> Stub(const std::string& identity = "station-1") {
    return v1::CertificateAuthority::NewStub(ca_->Channel(server_->address(), identity));
  }
  static grpc::Status Sign(const v1::SignCsrRequest& req, v1::SignCsrResponse* resp,
                           const std::string& identity = "station-1") {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return Stub(identity)->SignCsr(&ctx, req, resp);
  }
  static int64_t Records() {
    return std::stoll(testing::SqliteScalar(ca_->dir + "/text.db", "SELECT COUNT(*) FROM certificates"));
  }
  // AuditLines returns the audit entries that mention `needle`.
  static std::vector<nlohmann::json> AuditLines(const std::string& needle) {
    std::vector<nlohmann::json> out;
    std::string text = *ReadFile(ca_->dir + "/audit.jsonl");
    for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
      if (absl::StrContains(line, needle)) out.push_back(nlohmann::json::parse(line));
    }
    return out;
  }

  static TestCa* ca_;
  static ServerProcess* server_;
};
TestCa* StationTextTest::ca_ = nullptr;
ServerProcess* StationTextTest::server_ = nullptr;

// CsrWithRawSans makes a P-256 CSR whose SANs hold exactly `names` (GEN_DNS, GEN_URI, GEN_EMAIL with raw bytes).
std::string CsrWithRawSans(const std::vector<std::pair<int, std::string>>& names) {
  OsslPtr<EVP_PKEY> key(EVP_EC_gen("P-256"));
  OsslPtr<X509_REQ> req(X509_REQ_new());
  X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req.get()), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("RAWSANS"), -1, -1, 0);
  GENERAL_NAMES* gns = GENERAL_NAMES_new();
  for (const auto& [type, value] : names) {
    GENERAL_NAME* name = GENERAL_NAME_new();
    ASN1_IA5STRING* v = ASN1_IA5STRING_new();
    ASN1_STRING_set(v, value.data(), static_cast<int>(value.size()));
    GENERAL_NAME_set0_value(name, type, v);
    sk_GENERAL_NAME_push(gns, name);
  }
  STACK_OF(X509_EXTENSION)* exts = sk_X509_EXTENSION_new_null();
  sk_X509_EXTENSION_push(exts, X509V3_EXT_i2d(NID_subject_alt_name, 0, gns));
  X509_REQ_add_extensions(req.get(), exts);
  sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  GENERAL_NAMES_free(gns);
  X509_REQ_set_pubkey(req.get(), key.get());
  X509_REQ_sign(req.get(), key.get(), EVP_sha256());
  return ToDer(i2d_X509_REQ, static_cast<const X509_REQ*>(req.get()));
}

// A SAN whose value holds a comma and the text of another SAN (a valid URN) reads back as exactly the SANs sent:
// typed in GetCertificateResponse.san, quoted in the display string, one line each in `linesign show`. (The record
// used to join them with commas, so this certificate read back as four SANs, one a DNS name it does not hold.)
TEST_F(StationTextTest, SansReadBackExactlyAsSent) {
  v1::SignCsrRequest req;
  req.set_csr_der(CsrWithRawSans({{GEN_URI, "urn:example:a,DNS:evil.example"},
                                  {GEN_DNS, "d.example"},
                                  {GEN_EMAIL, "ops@example.com"}}));
  req.set_request_id("text-sans-1");
  req.set_profile("names");
  v1::SignCsrResponse signed_resp;
  grpc::Status st = Sign(req, &signed_resp);
  ASSERT_TRUE(st.ok()) << st.error_message();

  v1::GetCertificateRequest get;
  get.set_serial_hex(signed_resp.serial_hex());
  v1::GetCertificateResponse record;
  grpc::ClientContext ctx;
  st = v1::Administration::NewStub(ca_->Channel(server_->address(), "admin"))->GetCertificate(&ctx, get, &record);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(record.san_size(), 3);
  EXPECT_EQ(record.san(0).type(), "URI");
  EXPECT_EQ(record.san(0).value(), "urn:example:a,DNS:evil.example");
  EXPECT_EQ(record.san(1).type(), "DNS");
  EXPECT_EQ(record.san(1).value(), "d.example");
  EXPECT_EQ(record.san(2).type(), "email");
  EXPECT_EQ(record.san(2).value(), "ops@example.com");
  for (const auto& san : record.san()) EXPECT_TRUE(san.raw_value().empty());
  EXPECT_EQ(record.sans(), R"(URI:"urn:example:a,DNS:evil.example", DNS:"d.example", email:"ops@example.com")");

  std::string dir = testing::TempDir("linesign-show");
  ASSERT_TRUE(tls::WriteCredentials(dir + "/admin", ca_->station_ca.certificate_pem,
                                    ca_->StationCredentials("admin"))
                  .ok());
  auto show = testing::RunCommand({testing::ClientBinary(), "show", "--server", server_->address(), "--tls-dir",
                                   dir + "/admin", "--serial", signed_resp.serial_hex()});
  ASSERT_EQ(show.exit_code, 0) << show.output;
  std::vector<std::string> san_lines;
  for (absl::string_view line : absl::StrSplit(show.output, '\n')) {
    if (absl::StartsWith(line, "san:")) san_lines.emplace_back(line);
  }
  EXPECT_THAT(san_lines, ::testing::ElementsAre(R"(san:        URI:"urn:example:a,DNS:evil.example")",
                                                R"(san:        DNS:"d.example")",
                                                R"(san:        email:"ops@example.com")"));
  EXPECT_THAT(show.output, HasSubstr("subject:    \"CN=RAWSANS\"\n"));
  EXPECT_THAT(show.output, HasSubstr("request_id: \"text-sans-1\"\n"));
}

// `linesign list` (Administration.ListCertificates) prints one line per certificate, following pages with --all,
// and quotes what a station chose, so a SAN holding a comma and another SAN's text stays inside its quotes.
TEST_F(StationTextTest, ListPrintsOneQuotedLinePerCertificateAcrossPages) {
  for (const char* id : {"text-list-1", "text-list-2", "text-list-3"}) {
    v1::SignCsrRequest req;
    req.set_csr_der(CsrWithRawSans({{GEN_URI, "urn:example:a,DNS:evil.example"}}));
    req.set_request_id(id);
    req.set_profile("names");
    v1::SignCsrResponse resp;
    grpc::Status st = Sign(req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  std::string dir = testing::TempDir("linesign-list");
  ASSERT_TRUE(tls::WriteCredentials(dir + "/admin", ca_->station_ca.certificate_pem,
                                    ca_->StationCredentials("admin"))
                  .ok());
  auto list = testing::RunCommand({testing::ClientBinary(), "list", "--server", server_->address(), "--tls-dir",
                                   dir + "/admin", "--profile", "names", "--page-size", "1", "--all"});
  ASSERT_EQ(list.exit_code, 0) << list.output;
  std::vector<std::string> mine;
  for (absl::string_view line : absl::StrSplit(list.output, '\n')) {
    if (absl::StrContains(line, "request_id=\"text-list-")) mine.emplace_back(line);
  }
  ASSERT_EQ(mine.size(), 3u) << list.output;
  for (const std::string& line : mine) {
    EXPECT_THAT(line, HasSubstr(R"( profile="names" station="station-1" )"));
    EXPECT_THAT(line, HasSubstr(R"(sans=[URI:"urn:example:a,DNS:evil.example"])"));
  }
  // The administrators' service refuses a forged page token by name, never as a store failure.
  v1::ListCertificatesRequest forged;
  forged.set_page_token("c1.0 UNION SELECT der FROM certificates");
  v1::ListCertificatesResponse resp;
  grpc::ClientContext ctx;
  grpc::Status st =
      v1::Administration::NewStub(ca_->Channel(server_->address(), "admin"))->ListCertificates(&ctx, forged, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("page_token is not one this server returned"));
}

// A request id names one request: the same id and CSR under another profile is ALREADY_EXISTS naming the earlier
// serial and profile, audited as refused (it used to return the device certificate with replayed=true).
TEST_F(StationTextTest, SameRequestIdUnderAnotherProfileIsAlreadyExists) {
  std::string csr = testing::Csr("ec-p256", "/CN=gateway7", {"DNS:gw7.example"});
  v1::SignCsrRequest req;
  req.set_csr_der(csr);
  req.set_request_id("text-profile-1");
  req.set_profile("device");
  v1::SignCsrResponse first;
  ASSERT_TRUE(Sign(req, &first).ok());
  int64_t before = Records();
  req.set_profile("server");
  v1::SignCsrResponse second;
  grpc::Status st = Sign(req, &second);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(st.error_message(),
            absl::StrCat("request_id 'text-profile-1' was already used for serial ", first.serial_hex(),
                         " under profile 'device'; a different profile (here 'server') is a different request: "
                         "use a new request_id"));
  EXPECT_TRUE(second.certificate_der().empty());
  EXPECT_FALSE(second.replayed());
  EXPECT_EQ(Records(), before);
  auto audit = AuditLines("\"text-profile-1\"");
  ASSERT_EQ(audit.size(), 2u);
  EXPECT_EQ(audit[1]["profile"], "server");
  EXPECT_EQ(audit[1]["outcome"], "refused");
  EXPECT_EQ(audit[1]["code"], "ALREADY_EXISTS");

  // The same profile again is still a retry.
  req.set_profile("device");
  v1::SignCsrResponse third;
  ASSERT_TRUE(Sign(req, &third).ok());
  EXPECT_TRUE(third.replayed());
  EXPECT_EQ(third.certificate_der(), first.certificate_der());
}

// Which profile names exist is nobody's business: an identity no rule matches is refused the same way whatever
// profile it names (an unknown one used to be INVALID_ARGUMENT, an existing one PERMISSION_DENIED), and a station
// gets the same answer for an unknown profile as for one it may not use.
TEST_F(StationTextTest, ProfileNamesDoNotLeak) {
  std::string csr = testing::Csr("ec-p256", "/CN=PROBE");
  std::map<std::string, std::string> stranger;
  for (const char* profile : {"device", "serial", "no-such-profile", ""}) {
    v1::SignCsrRequest req;
    req.set_csr_der(csr);
    req.set_request_id("probe");
    req.set_profile(profile);
    v1::SignCsrResponse resp;
    grpc::Status st = Sign(req, &resp, "stranger");
    EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << profile;
    stranger[profile] = st.error_message();
  }
  for (const auto& [profile, message] : stranger) {
    EXPECT_EQ(message, "identity 'stranger' may not call SignCsr: no access rule matches it") << profile;
  }
  for (const char* profile : {"serial", "no-such-profile"}) {
    v1::SignCsrRequest req;
    req.set_csr_der(csr);
    req.set_request_id("probe");
    req.set_profile(profile);
    v1::SignCsrResponse resp;
    grpc::Status st = Sign(req, &resp, "line1-st1");
    EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << profile;
    EXPECT_EQ(st.error_message(),
              absl::StrCat("station 'line1-st1' may not use profile '", profile, "' (allowed: device)"));
  }
}

// The text fields are `bytes` on the wire type of `string`: bytes that are not UTF-8 used to fail inside gRPC's
// parser (UNIMPLEMENTED, no message, no audit entry). Each is now INVALID_ARGUMENT naming the field, audited
// with the bytes escaped, on the unary call and on the stream.
TEST_F(StationTextTest, InvalidUtf8InEachFieldIsInvalidArgumentAndAudited) {
  const std::string csr = testing::Csr("ec-p256", "/CN=UTF8");
  struct Case {
    std::string field;
    std::function<void(v1::SignCsrRequest*)> set;
  };
  const std::vector<Case> cases = {
      {"request_id", [](v1::SignCsrRequest* r) { r->set_request_id("utf8-\xFF\xFE-id"); }},
      {"profile", [](v1::SignCsrRequest* r) { r->set_profile("dev\xC3"); }},
      {"csr_pem",
       [&](v1::SignCsrRequest* r) { r->set_csr_pem(PemEncode("CERTIFICATE REQUEST", csr) + "\xED\xA0\x80"); }},
  };
  int64_t before = Records();
  for (const Case& c : cases) {
    v1::SignCsrRequest req;
    req.set_csr_der(csr);
    req.set_request_id("utf8-" + c.field);
    c.set(&req);
    v1::SignCsrResponse resp;
    grpc::Status st = Sign(req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.field << ": " << st.error_message();
    EXPECT_THAT(st.error_message(), HasSubstr(c.field + " is not valid UTF-8 (byte 0x")) << c.field;

    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    auto stub = Stub();
    auto stream = stub->SignCsrStream(&ctx);
    ASSERT_TRUE(stream->Write(req)) << c.field;
    stream->WritesDone();
    v1::SignCsrStreamResponse answer;
    ASSERT_TRUE(stream->Read(&answer)) << c.field;
    EXPECT_TRUE(IsValidUtf8(answer.request_id()));
    ASSERT_TRUE(answer.has_error()) << c.field;
    EXPECT_EQ(answer.error().code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT)) << c.field;
    EXPECT_THAT(answer.error().message(), HasSubstr(c.field + " is not valid UTF-8")) << c.field;
    EXPECT_FALSE(stream->Read(&answer));
    EXPECT_TRUE(stream->Finish().ok()) << c.field;
  }
  EXPECT_EQ(Records(), before);
  // The stream echoes a request id that is not UTF-8 escaped; the audit log carries it escaped the same way.
  auto audit = AuditLines(R"(utf8-\\xFF\\xFE-id)");
  ASSERT_EQ(audit.size(), 2u);  // unary and stream
  for (const auto& line : audit) {
    EXPECT_EQ(line["outcome"], "refused");
    EXPECT_EQ(line["code"], "INVALID_ARGUMENT");
    EXPECT_EQ(line["request_id"], "utf8-\\xFF\\xFE-id");
    EXPECT_THAT(line["reason"].get<std::string>(), HasSubstr("request_id is not valid UTF-8 (byte 0xFF at offset 5)"));
  }
  EXPECT_EQ(AuditLines(R"(profile is not valid UTF-8 (byte 0xC3 at offset 3))").size(), 2u);
  EXPECT_EQ(AuditLines(R"(csr_pem is not valid UTF-8 (byte 0xED)").size(), 2u);
}

// `linesign sign --out -` writes the certificate to standard output (and never a file named "-").
TEST_F(StationTextTest, ClientWritesToStandardOutputForDash) {
  std::string dir = testing::TempDir("linesign-stdout");
  ASSERT_TRUE(tls::WriteCredentials(dir + "/station", ca_->station_ca.certificate_pem,
                                    ca_->StationCredentials("station-1"))
                  .ok());
  ASSERT_TRUE(WriteFile(dir + "/device.csr", PemEncode("CERTIFICATE REQUEST", testing::Csr("ec-p256", "/CN=STDOUT")))
                  .ok());
  auto sign = testing::RunCommand({"/bin/sh", "-c",
                                   absl::StrCat("cd '", dir, "' && '", testing::ClientBinary(), "' sign --server ",
                                                server_->address(), " --tls-dir station --csr device.csr --out - ",
                                                "2>stderr.txt")});
  ASSERT_EQ(sign.exit_code, 0) << sign.output;
  EXPECT_TRUE(absl::StartsWith(sign.output, "-----BEGIN CERTIFICATE-----\n")) << sign.output;
  auto cert = ParseCertificatesPem(sign.output, "stdout");
  ASSERT_TRUE(cert.ok() && cert->size() == 1u) << sign.output;
  EXPECT_THAT(*ReadFile(dir + "/stderr.txt"), HasSubstr("-> standard output"));
  struct stat st;
  EXPECT_NE(stat((dir + "/-").c_str(), &st), 0);
  // The database the server created is owner-only.
  ASSERT_EQ(stat((ca_->dir + "/text.db").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

}  // namespace
}  // namespace linesign
