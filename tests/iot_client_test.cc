// The AWS IoT client (server/iot/) against the fake AWS IoT control plane (tests/fake_iot/fake_iot.py) over real
// HTTP on loopback: the fake verifies every SigV4 signature with its own implementation, so a request it accepts
// is one AWS would accept (tests/fake_iot/aws_cli_test.py proves the fake's verifier against the AWS CLI).
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <set>
#include <thread>

#include "common/clock.h"
#include "common/openssl_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/iot/aws_error.h"
#include "server/iot/device_registration.h"
#include "server/iot/iot_client.h"
#include "server/iot/sigv4.h"
#include "tests/testing/fake_iot.h"

namespace linesign {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kAccessKey[] = "AKIDLINESIGNTEST0001";
constexpr char kSecret[] = "linesignTestSecret/K7MDENG+bPxRfiCYzzzzz";
constexpr char kToken[] = "FQoGZXIvYXdzELINESIGNsessionTOKEN0123456789==";

struct KeyAndCert {
  OsslPtr<EVP_PKEY> key;
  std::string pem, der;
};

OsslPtr<EVP_PKEY> NewKey() { return OsslPtr<EVP_PKEY>(EVP_EC_gen("P-256")); }

// MakeCert: a certificate for `key` named `cn`, issued by `issuer_cn` and signed with `signing_key`.
KeyAndCert MakeCert(const std::string& cn, const std::string& issuer_cn, OsslPtr<EVP_PKEY> key,
                    EVP_PKEY* signing_key, bool ca) {
  OsslPtr<X509> x(X509_new());
  X509_set_version(x.get(), 2);
  static long serial = 1000;
  ASN1_INTEGER_set(X509_get_serialNumber(x.get()), ++serial);
  X509_gmtime_adj(X509_getm_notBefore(x.get()), -300);
  X509_gmtime_adj(X509_getm_notAfter(x.get()), 86400L * 30);
  auto name = [](const std::string& n) {
    X509_NAME* name = X509_NAME_new();
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(n.c_str()), -1, -1,
                               0);
    return name;
  };
  X509_NAME* subject = name(cn);
  X509_NAME* issuer = name(issuer_cn);
  X509_set_subject_name(x.get(), subject);
  X509_set_issuer_name(x.get(), issuer);
  X509_NAME_free(subject);
  X509_NAME_free(issuer);
  X509_set_pubkey(x.get(), key.get());
  X509_EXTENSION* bc = X509V3_EXT_conf_nid(nullptr, nullptr, NID_basic_constraints, ca ? "critical,CA:TRUE"
                                                                                        : "critical,CA:FALSE");
  X509_add_ext(x.get(), bc, -1);
  X509_EXTENSION_free(bc);
  X509_sign(x.get(), signing_key == nullptr ? key.get() : signing_key, EVP_sha256());
  KeyAndCert out;
  out.der = CertificateDer(x.get());
  out.pem = PemEncode("CERTIFICATE", out.der);
  out.key = std::move(key);
  return out;
}

std::unique_ptr<iot::RestIotClient> Client(const testing::FakeIot& fake, const std::string& secret = kSecret,
                                           iot::CurlTransportOptions options = {}) {
  iot::IotTarget target;
  target.name = "main";
  target.region = "us-east-1";
  target.endpoint = *iot::ParseEndpoint(fake.endpoint(), "test");
  target.credentials.access_key_id = kAccessKey;
  target.credentials.secret_access_key = iot::Secret(secret);
  target.credentials.session_token = iot::Secret(kToken);
  auto transport = iot::CurlTransport::Create(options);
  EXPECT_TRUE(transport.ok()) << transport.status();
  auto client = iot::RestIotClient::Create(std::move(target), std::shared_ptr<const iot::HttpTransport>(
                                                                  std::move(transport).value()),
                                           RealClock::Get());
  EXPECT_TRUE(client.ok()) << client.status();
  return std::move(client).value();
}

std::unique_ptr<testing::FakeIot> StartFake(const std::vector<std::string>& args = {"--no-rate-limits"}) {
  auto fake = testing::FakeIot::Start(kAccessKey, kSecret, kToken, args);
  EXPECT_TRUE(fake.ok()) << fake.status();
  return fake.ok() ? std::move(fake).value() : nullptr;
}

TEST(IotClient, EveryOperationAgainstTheFake) {
  auto fake = StartFake();
  ASSERT_NE(fake, nullptr);
  auto client = Client(*fake);

  auto code = client->GetRegistrationCode();
  ASSERT_TRUE(code.ok()) << code.status();
  ASSERT_EQ(code->size(), 64u);
  KeyAndCert ca = MakeCert("Acme Factory CA", "Acme Factory CA", NewKey(), nullptr, true);
  KeyAndCert verification = MakeCert(*code, "Acme Factory CA", NewKey(), ca.key.get(), false);

  auto registered_ca = client->RegisterCaCertificate(
      {.ca_certificate_pem = ca.pem, .verification_certificate_pem = verification.pem, .set_as_active = true});
  ASSERT_TRUE(registered_ca.ok()) << registered_ca.status();
  EXPECT_EQ(registered_ca->certificate_id, iot::HexSha256(ca.der));
  auto described_ca = client->DescribeCaCertificate(registered_ca->certificate_id);
  ASSERT_TRUE(described_ca.ok()) << described_ca.status();
  EXPECT_EQ(described_ca->status, "ACTIVE");
  EXPECT_EQ(described_ca->certificate_mode, "DEFAULT");
  EXPECT_EQ(described_ca->auto_registration_status, "DISABLE");
  ASSERT_TRUE(client->UpdateCaCertificate(registered_ca->certificate_id, std::nullopt, "ENABLE").ok());
  EXPECT_EQ(client->DescribeCaCertificate(registered_ca->certificate_id)->auto_registration_status, "ENABLE");

  KeyAndCert device = MakeCert("DEVICE000001", "Acme Factory CA", NewKey(), ca.key.get(), false);
  auto registered = client->RegisterCertificate(device.pem, ca.pem, "ACTIVE");
  ASSERT_TRUE(registered.ok()) << registered.status();
  EXPECT_EQ(registered->certificate_id, iot::HexSha256(device.der));
  auto thing = client->CreateThing("DEVICE000001", {{"line", "3"}});
  ASSERT_TRUE(thing.ok()) << thing.status();
  EXPECT_EQ(thing->thing_name, "DEVICE000001");
  ASSERT_TRUE(client->AttachThingPrincipal("DEVICE000001", registered->certificate_arn).ok());
  ASSERT_TRUE(client->AttachPolicy("factory-device", registered->certificate_arn).ok());
  // ':' is percent-encoded in the path and encoded once more in the signature: the fake must agree.
  ASSERT_TRUE(client->CreateThing("line:3_DEVICE-1", {}).ok());
  ASSERT_TRUE(client->AttachThingPrincipal("line:3_DEVICE-1", registered->certificate_arn).ok());
  auto described = client->DescribeCertificate(registered->certificate_id);
  ASSERT_TRUE(described.ok()) << described.status();
  EXPECT_EQ(described->status, "ACTIVE");
  EXPECT_EQ(described->certificate_pem, device.pem);
  EXPECT_EQ(described->ca_certificate_id, registered_ca->certificate_id);

  KeyAndCert sni = MakeCert("DEVICE000002", "Other CA", NewKey(), nullptr, false);
  auto without_ca = client->RegisterCertificateWithoutCa(sni.pem, "ACTIVE");
  ASSERT_TRUE(without_ca.ok()) << without_ca.status();
  EXPECT_EQ(client->DescribeCertificate(without_ca->certificate_id)->certificate_mode, "SNI_ONLY");

  nlohmann::json state = fake->State();
  EXPECT_EQ(state["things"][0]["principals"], nlohmann::json::array({registered->certificate_arn}));
  EXPECT_EQ(state["things"][1]["thingName"], "line:3_DEVICE-1");
  EXPECT_EQ(state["policies"]["factory-device"], nlohmann::json::array({registered->certificate_arn}));
  for (const auto& call : fake->Calls()) EXPECT_EQ(call["error"], nullptr) << call.dump();
}

TEST(IotClient, VerificationCertificateSignedByAnotherKeyIsRefused) {
  auto fake = StartFake();
  ASSERT_NE(fake, nullptr);
  auto client = Client(*fake);
  auto code = client->GetRegistrationCode();
  ASSERT_TRUE(code.ok()) << code.status();
  KeyAndCert ca = MakeCert("Acme Factory CA", "Acme Factory CA", NewKey(), nullptr, true);
  OsslPtr<EVP_PKEY> other = NewKey();
  KeyAndCert forged = MakeCert(*code, "Acme Factory CA", NewKey(), other.get(), false);
  auto refused = client->RegisterCaCertificate({.ca_certificate_pem = ca.pem,
                                                .verification_certificate_pem = forged.pem});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(iot::ClassifyAwsError(refused.status()), iot::AwsErrorKind::kCertificateValidation);
  EXPECT_FALSE(iot::IsRetryable(iot::ClassifyAwsError(refused.status())));
  // SNI_ONLY needs no verification certificate.
  auto sni_only = client->RegisterCaCertificate({.ca_certificate_pem = ca.pem, .mode = iot::CertificateMode::kSniOnly});
  ASSERT_TRUE(sni_only.ok()) << sni_only.status();
  EXPECT_EQ(client->DescribeCaCertificate(sni_only->certificate_id)->certificate_mode, "SNI_ONLY");
}

TEST(IotClient, DuplicatesAreClassifiedAlreadyExistsByCodeNotStatus) {
  auto fake = StartFake();
  ASSERT_NE(fake, nullptr);
  auto client = Client(*fake);
  KeyAndCert device = MakeCert("DEVICE000003", "Other CA", NewKey(), nullptr, false);
  ASSERT_TRUE(client->RegisterCertificateWithoutCa(device.pem, "ACTIVE").ok());
  auto again = client->RegisterCertificateWithoutCa(device.pem, "ACTIVE");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(iot::ClassifyAwsError(again.status()), iot::AwsErrorKind::kAlreadyExists);
  EXPECT_EQ(iot::AwsErrorCode(again.status()), "ResourceAlreadyExistsException");
  EXPECT_THAT(std::string(again.status().message()),
              HasSubstr("AWS IoT RegisterCertificateWithoutCA: ResourceAlreadyExistsException (HTTP 409)"));

  ASSERT_TRUE(client->CreateThing("DEVICE000003", {{"line", "3"}}).ok());
  EXPECT_TRUE(client->CreateThing("DEVICE000003", {{"line", "3"}}).ok());  // same attributes: success again
  auto other = client->CreateThing("DEVICE000003", {{"line", "4"}});
  EXPECT_EQ(iot::ClassifyAwsError(other.status()), iot::AwsErrorKind::kAlreadyExists);

  // A bad argument is refused before any request, by the API model's rule.
  auto bad_name = client->CreateThing("DEVICE 3", {});
  EXPECT_EQ(bad_name.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(iot::ClassifyAwsError(bad_name.status()), iot::AwsErrorKind::kNone);
}

TEST(IotClient, ThrottlingIsClassifiedRetryable) {
  // DescribeCertificate at 0.001/s with a burst of one: the second call is throttled whatever the timing.
  auto fake = StartFake({"--rates", "DescribeCertificate=0.001:1"});
  ASSERT_NE(fake, nullptr);
  auto client = Client(*fake);
  const std::string missing(64, 'a');
  EXPECT_EQ(iot::ClassifyAwsError(client->DescribeCertificate(missing).status()), iot::AwsErrorKind::kNotFound);
  auto throttled = client->DescribeCertificate(missing);
  ASSERT_FALSE(throttled.ok());
  EXPECT_EQ(iot::ClassifyAwsError(throttled.status()), iot::AwsErrorKind::kThrottled);
  EXPECT_TRUE(iot::IsRetryable(iot::ClassifyAwsError(throttled.status())));
  EXPECT_EQ(throttled.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(throttled.status().message()), HasSubstr("ThrottlingException (HTTP 400)"));
}

TEST(IotClient, ServiceFaultsAndTimeoutsAreRetryable) {
  auto faulty = StartFake({"--no-rate-limits", "--fault-5xx", "1"});
  ASSERT_NE(faulty, nullptr);
  auto fault = Client(*faulty)->GetRegistrationCode();
  EXPECT_EQ(iot::ClassifyAwsError(fault.status()), iot::AwsErrorKind::kServiceFault);
  EXPECT_EQ(fault.status().code(), absl::StatusCode::kUnavailable);

  auto silent = StartFake({"--no-rate-limits", "--fault-timeout", "1", "--timeout-seconds", "5"});
  ASSERT_NE(silent, nullptr);
  auto timeout = Client(*silent, kSecret, {.request_timeout = absl::Milliseconds(300)})->GetRegistrationCode();
  EXPECT_EQ(timeout.status().code(), absl::StatusCode::kDeadlineExceeded) << timeout.status();
  EXPECT_EQ(iot::ClassifyAwsError(timeout.status()), iot::AwsErrorKind::kTransport);
  EXPECT_TRUE(iot::IsRetryable(iot::ClassifyAwsError(timeout.status())));
}

TEST(IotClient, WrongSecretIsRefusedByTheFakeAndNothingSecretIsShownOrLogged) {
  auto fake = StartFake();
  ASSERT_NE(fake, nullptr);
  const std::string wrong = std::string("wrong") + kSecret;
  ::testing::internal::CaptureStderr();
  ::testing::internal::CaptureStdout();
  auto refused = Client(*fake, wrong)->GetRegistrationCode();
  const std::string logged = ::testing::internal::GetCapturedStderr() + ::testing::internal::GetCapturedStdout();
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(iot::ClassifyAwsError(refused.status()), iot::AwsErrorKind::kNotAuthorized);
  EXPECT_EQ(iot::AwsErrorCode(refused.status()), "InvalidSignatureException");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied);
  const std::string message(refused.status().message());
  EXPECT_THAT(message, HasSubstr("signature we calculated does not match"));
  // The fake, like AWS, quotes the canonical request it computed, session token included: none of it may leak.
  for (const std::string& hidden : {wrong, std::string(kSecret), std::string(kToken)}) {
    EXPECT_THAT(message, Not(HasSubstr(hidden)));
    EXPECT_THAT(logged, Not(HasSubstr(hidden)));
  }
  EXPECT_THAT(message, Not(HasSubstr("Canonical String")));
  EXPECT_THAT(message, Not(HasSubstr("Signature=")));
  nlohmann::json calls = fake->Calls();
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0]["signature"], "invalid");
}

TEST(IotClient, ConcurrentCallsShareABoundedPoolOfKeptAliveConnections) {
  auto fake = StartFake();
  ASSERT_NE(fake, nullptr);
  auto client = Client(*fake, kSecret, {.max_connections = 3});
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5; ++i) ok += client->GetRegistrationCode().ok();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 40);
  std::set<int> connections;
  for (const auto& call : fake->Calls()) connections.insert(call["peer_port"].get<int>());
  // 40 requests over at most 3 connections: never more in flight than the pool, and each connection kept alive.
  EXPECT_LE(connections.size(), 3u);
  EXPECT_GE(connections.size(), 1u);
}

}  // namespace
}  // namespace linesign

namespace linesign {
namespace {

int CountCalls(const nlohmann::json& calls, const std::string& op) {
  int n = 0;
  for (const auto& call : calls) n += call["operation"] == op;
  return n;
}

TEST(DeviceRegistration, WithCaEveryStepOnceAndNoDescribeOnTheHappyPath) {
  auto fake = StartFake();
  ASSERT_NE(fake, nullptr);
  auto client = Client(*fake);
  KeyAndCert ca = MakeCert("Acme Factory CA", "Acme Factory CA", NewKey(), nullptr, true);
  ASSERT_TRUE(client->RegisterCaCertificate({.ca_certificate_pem = ca.pem, .mode = iot::CertificateMode::kSniOnly})
                  .ok());
  KeyAndCert device = MakeCert("DEVICE000010", "Acme Factory CA", NewKey(), ca.key.get(), false);
  iot::DeviceRegistration r{.certificate_der = device.der, .ca_certificate_pem = ca.pem,
                            .thing_name = "DEVICE000010", .policy = "factory-device"};
  iot::RegistrationProgress progress;
  std::vector<std::string> steps;
  while (progress.next != iot::RegistrationStep::kDone) {
    steps.push_back(iot::RegistrationStepName(progress.next));
    ASSERT_TRUE(iot::RunNextStep(*client, r, &progress).ok());
  }
  EXPECT_THAT(steps, ::testing::ElementsAre("register", "create-thing", "attach-principal", "attach-policy"));
  EXPECT_FALSE(progress.already_registered);
  nlohmann::json calls = fake->Calls();
  EXPECT_EQ(CountCalls(calls, "RegisterCertificate"), 1);
  EXPECT_EQ(CountCalls(calls, "CreateThing"), 1);
  EXPECT_EQ(CountCalls(calls, "AttachThingPrincipal"), 1);
  EXPECT_EQ(CountCalls(calls, "AttachPolicy"), 1);
  EXPECT_EQ(CountCalls(calls, "DescribeCertificate"), 0);
  nlohmann::json state = fake->State();
  EXPECT_EQ(state["certificates"][0]["certificateId"], iot::HexSha256(device.der));
  EXPECT_EQ(state["certificates"][0]["status"], "ACTIVE");
  EXPECT_EQ(state["things"][0]["principals"][0], progress.certificate_arn);
  EXPECT_EQ(state["policies"]["factory-device"][0], progress.certificate_arn);
}

TEST(DeviceRegistration, ALostAnswerIsRecognisedByOneDescribeAndResumesFromThePersistedStep) {
  // Every RegisterCertificateWithoutCA succeeds at AWS but its answer is a 500.
  auto fake = StartFake({"--no-rate-limits", "--fault-5xx-after", "1", "--fault-ops", "RegisterCertificateWithoutCA"});
  ASSERT_NE(fake, nullptr);
  auto client = Client(*fake);
  KeyAndCert device = MakeCert("DEVICE000011", "Other CA", NewKey(), nullptr, false);
  iot::DeviceRegistration r{.certificate_der = device.der, .thing_name = "DEVICE000011"};
  iot::RegistrationProgress progress;
  absl::Status lost = iot::RunNextStep(*client, r, &progress);
  ASSERT_FALSE(lost.ok());
  EXPECT_TRUE(iot::IsRetryable(iot::ClassifyAwsError(lost)));
  EXPECT_THAT(std::string(lost.message()), HasSubstr("register: AWS IoT RegisterCertificateWithoutCA"));
  EXPECT_EQ(progress.next, iot::RegistrationStep::kRegister);  // unchanged: retry the step
  ASSERT_TRUE(iot::RunNextStep(*client, r, &progress).ok());
  EXPECT_TRUE(progress.already_registered);
  EXPECT_EQ(progress.next, iot::RegistrationStep::kCreateThing);

  // A restart: only the persisted progress survives.
  auto resumed = iot::RegistrationProgress::FromJson(progress.ToJson());
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  auto client2 = Client(*fake);
  while (resumed->next != iot::RegistrationStep::kDone) ASSERT_TRUE(iot::RunNextStep(*client2, r, &*resumed).ok());
  nlohmann::json calls = fake->Calls();
  EXPECT_EQ(CountCalls(calls, "RegisterCertificateWithoutCA"), 2);  // the lost one, the one answered 409
  EXPECT_EQ(CountCalls(calls, "DescribeCertificate"), 1);
  EXPECT_EQ(CountCalls(calls, "CreateThing"), 1);
  EXPECT_EQ(CountCalls(calls, "AttachThingPrincipal"), 1);
  EXPECT_EQ(fake->State()["certificates"].size(), 1u);
}

TEST(DeviceRegistration, APermanentRefusalIsNotRetryableAndChangesNothing) {
  auto fake = StartFake({"--no-rate-limits", "--reject-cn", "BAD.*"});
  ASSERT_NE(fake, nullptr);
  auto client = Client(*fake);
  KeyAndCert device = MakeCert("BAD000001", "Other CA", NewKey(), nullptr, false);
  iot::DeviceRegistration r{.certificate_der = device.der};
  iot::RegistrationProgress progress;
  absl::Status refused = iot::RunNextStep(*client, r, &progress);
  EXPECT_EQ(iot::ClassifyAwsError(refused), iot::AwsErrorKind::kCertificateValidation);
  EXPECT_FALSE(iot::IsRetryable(iot::ClassifyAwsError(refused)));
  EXPECT_EQ(progress.next, iot::RegistrationStep::kRegister);
  EXPECT_FALSE(iot::RegistrationProgress::FromJson("{\"next\":\"fly\",\"certificate_arn\":\"\","
                                                   "\"already_registered\":false}")
                   .ok());
  EXPECT_FALSE(iot::RegistrationProgress::FromJson("{\"next\":\"attach-policy\",\"certificate_arn\":\"\","
                                                   "\"already_registered\":false}")
                   .ok());
}

}  // namespace
}  // namespace linesign
