// An MQTT broker that trusts linesign's chain and loads linesign's CRL refuses a revoked device certificate and
// accepts a valid one: the real `mosquitto` broker (Debian package) on a loopback port with TLS,
// require_certificate and crlfile, and the real `mosquitto_pub`, against the real linesign-server with its key in
// SoftHSM2. The broker's own server certificate is made with the OpenSSL command line in the test.
#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/openssl_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "linesign/v1/admin.grpc.pb.h"
#include "linesign/v1/ca.grpc.pb.h"
#include "server/config/config.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_ca.h"

namespace linesign {
namespace {

using ::testing::HasSubstr;

constexpr char kMosquitto[] = "/usr/sbin/mosquitto";
constexpr char kMosquittoPub[] = "/usr/bin/mosquitto_pub";
constexpr char kOpenssl[] = "/usr/bin/openssl";

std::unique_ptr<grpc::ClientContext> Context() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  return ctx;
}

bool Accepts(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  close(fd);
  return ok;
}

// Broker is a mosquitto process; its log goes to `log`.
class Broker {
 public:
  static absl::StatusOr<std::unique_ptr<Broker>> Start(const std::string& config, const std::string& log, int port) {
    std::unique_ptr<Broker> b(new Broker());
    b->log_ = log;
    b->pid_ = fork();
    if (b->pid_ == 0) {
      int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      dup2(fd, 1);
      dup2(fd, 2);
      execl(kMosquitto, kMosquitto, "-c", config.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (!Accepts(port)) {
      int status = 0;
      if (waitpid(b->pid_, &status, WNOHANG) == b->pid_) {
        b->pid_ = -1;
        return absl::InternalError(absl::StrCat("mosquitto exited: ", ReadFile(log).value_or("")));
      }
      if (absl::Now() > deadline) return absl::InternalError("mosquitto did not listen within 30 s");
      absl::SleepFor(absl::Milliseconds(20));
    }
    return b;
  }
  ~Broker() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
  }
  std::string log() const { return ReadFile(log_).value_or(""); }

 private:
  pid_t pid_ = -1;
  std::string log_;
};

TEST(MosquittoTest, ABrokerWithLinesignsCrlRefusesARevokedDeviceAndAcceptsAValidOne) {
  ASSERT_EQ(access(kMosquitto, X_OK), 0) << kMosquitto << " is missing: scripts/install-deps.sh installs mosquitto";
  ASSERT_EQ(access(kMosquittoPub, X_OK), 0)
      << kMosquittoPub << " is missing: scripts/install-deps.sh installs mosquitto-clients";
  auto ca = testing::TestCa::Create("ec-p256");
  ASSERT_TRUE(ca.ok()) << ca.status();
  const std::string dir = testing::TempDir("mosquitto");
  ASSERT_EQ(chmod(dir.c_str(), 0755), 0);
  auto server = testing::ServerProcess::Start(
      {"--config", testing::WriteConfig(dir, config::ToYaml(ca->Config(dir + "/linesign.db")))});
  ASSERT_TRUE(server.ok()) << server.status();
  auto station = v1::CertificateAuthority::NewStub(ca->Channel((*server)->address(), "station-1"));
  auto admin = v1::Administration::NewStub(ca->Channel((*server)->address(), "admin"));

  // Two devices: keys and CSRs made with OpenSSL, certificates from linesign.
  std::map<std::string, v1::SignCsrResponse> issued;
  for (const std::string name : {"valid", "revoked"}) {
    auto req = testing::RunCommand({kOpenssl, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                                    "-nodes", "-keyout", dir + "/" + name + ".key", "-subj",
                                    "/CN=MQTT-" + name, "-outform", "DER", "-out", dir + "/" + name + ".csr"});
    ASSERT_EQ(req.exit_code, 0) << req.output;
    v1::SignCsrRequest sign;
    sign.set_csr_der(*ReadFile(dir + "/" + name + ".csr"));
    sign.set_request_id("mqtt-" + name);
    grpc::Status st = station->SignCsr(Context().get(), sign, &issued[name]);
    ASSERT_TRUE(st.ok()) << st.error_message();
    ASSERT_TRUE(WriteFile(dir + "/" + name + ".pem", issued[name].certificate_pem()).ok());
  }
  v1::RevokeCertificateRequest revoke;
  revoke.set_serial_hex(issued["revoked"].serial_hex());
  revoke.set_reason(v1::REVOCATION_REASON_KEY_COMPROMISE);
  v1::RevokeCertificateResponse revoked;
  grpc::Status st = admin->RevokeCertificate(Context().get(), revoke, &revoked);
  ASSERT_TRUE(st.ok()) << st.error_message();

  // The CRL that lists it (the publisher makes it within about a second).
  std::string serial = issued["revoked"].serial_hex();
  while (serial.size() > 1 && serial.substr(0, 2) == "00") serial.erase(0, 2);
  v1::GetCrlResponse crl;
  absl::Time deadline = absl::Now() + absl::Seconds(60);
  for (;;) {
    ASSERT_TRUE(station->GetCrl(Context().get(), {}, &crl).ok());
    ASSERT_TRUE(WriteFile(dir + "/linesign.crl", PemEncode("X509 CRL", crl.crl_der())).ok());
    auto text = testing::RunCommand({kOpenssl, "crl", "-in", dir + "/linesign.crl", "-noout", "-text"});
    if (text.output.find("Serial Number: " + serial) != std::string::npos) break;
    ASSERT_LT(absl::Now(), deadline) << "the CRL never listed " << serial << ":\n" << text.output;
    absl::SleepFor(absl::Milliseconds(100));
  }

  // The broker: its own certificate for 127.0.0.1 (self-signed; the clients trust it directly), linesign's root
  // and issuing CA as the client CA, linesign's CRL.
  auto server_cert = testing::RunCommand(
      {kOpenssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
       dir + "/broker.key", "-out", dir + "/broker.pem", "-days", "1", "-subj", "/CN=localhost", "-addext",
       "subjectAltName=IP:127.0.0.1,DNS:localhost"});
  ASSERT_EQ(server_cert.exit_code, 0) << server_cert.output;
  ASSERT_TRUE(WriteFile(dir + "/clients-ca.pem", *ReadFile(ca->root_pem) + *ReadFile(ca->chain_pem)).ok());
  for (const char* f : {"broker.key", "broker.pem", "clients-ca.pem", "linesign.crl"}) {
    chmod((dir + "/" + f).c_str(), 0644);  // mosquitto may read as another user
  }
  const passwd* me = getpwuid(getuid());
  ASSERT_NE(me, nullptr);
  // Config returns a broker configuration on `port`, with linesign's CRL or without it.
  auto config = [&](int port, bool with_crl) {
    return absl::StrCat("user ", me->pw_name, "\npersistence false\nlog_dest stderr\nlog_type all\n",
                        "listener ", port, " 127.0.0.1\n", "cafile ", dir, "/clients-ca.pem\n", "certfile ", dir,
                        "/broker.pem\n", "keyfile ", dir, "/broker.key\n", "require_certificate true\n",
                        with_crl ? absl::StrCat("crlfile ", dir, "/linesign.crl\n") : "", "allow_anonymous true\n");
  };
  auto publish = [&](int port, const std::string& name) {
    return testing::RunCommand({kMosquittoPub, "-h", "127.0.0.1", "-p", absl::StrCat(port), "--cafile",
                                dir + "/broker.pem", "--cert", dir + "/" + name + ".pem", "--key",
                                dir + "/" + name + ".key", "-i", "linesign-" + name, "-t", "linesign/test", "-m",
                                "hello from " + name, "-q", "1"},
                               30);
  };

  const int port = testing::FreeLoopbackPort();
  ASSERT_TRUE(WriteFile(dir + "/mosquitto.conf", config(port, true)).ok());
  auto broker = Broker::Start(dir + "/mosquitto.conf", dir + "/mosquitto.log", port);
  ASSERT_TRUE(broker.ok()) << broker.status();
  auto accepted = publish(port, "valid");
  EXPECT_EQ(accepted.exit_code, 0) << accepted.output << "\nbroker log:\n" << (*broker)->log();
  EXPECT_THAT((*broker)->log(), HasSubstr("New client connected from 127.0.0.1"));
  auto refused = publish(port, "revoked");
  EXPECT_NE(refused.exit_code, 0) << refused.output << "\nbroker log:\n" << (*broker)->log();
  EXPECT_THAT((*broker)->log(), HasSubstr("certificate verify failed"));
  EXPECT_THAT((*broker)->log(), ::testing::Not(HasSubstr("as linesign-revoked")));
  // OpenSSL's reason for the same files the broker was given: revoked.
  auto why = testing::RunCommand({kOpenssl, "verify", "-crl_check", "-CAfile", dir + "/clients-ca.pem", "-CRLfile",
                                  dir + "/linesign.crl", "-purpose", "sslclient", dir + "/revoked.pem"});
  EXPECT_THAT(why.output, HasSubstr("certificate revoked"));

  // The control: the same broker without the CRL accepts the revoked certificate, so the CRL is what refused it.
  const int open_port = testing::FreeLoopbackPort();
  ASSERT_TRUE(WriteFile(dir + "/no-crl.conf", config(open_port, false)).ok());
  auto open_broker = Broker::Start(dir + "/no-crl.conf", dir + "/no-crl.log", open_port);
  ASSERT_TRUE(open_broker.ok()) << open_broker.status();
  auto without_crl = publish(open_port, "revoked");
  EXPECT_EQ(without_crl.exit_code, 0) << without_crl.output << "\nbroker log:\n" << (*open_broker)->log();

  auto stopped = (*server)->Stop(SIGTERM);
  EXPECT_EQ(stopped.exit_code, 0) << stopped.output;
}

}  // namespace
}  // namespace linesign
