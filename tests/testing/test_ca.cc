#include "tests/testing/test_ca.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <map>

#include "absl/strings/str_cat.h"
#include "common/openssl_util.h"
#include "server/config/config.h"
#include "server/dev/dev_mode.h"

namespace linesign::testing {

std::string TempDir(const std::string& prefix) {
  const char* base = getenv("TMPDIR");
  std::string tmpl = absl::StrCat(base != nullptr && *base ? base : "/tmp", "/", prefix, "-XXXXXX");
  if (mkdtemp(tmpl.data()) == nullptr) abort();
  return tmpl;
}

std::string SourceDir() { return LINESIGN_SOURCE_DIR; }
std::string ServerBinary() { return LINESIGN_SERVER_BINARY; }
std::string ClientBinary() { return LINESIGN_CLIENT_BINARY; }

absl::StatusOr<TestCa> TestCa::Create(const std::string& algorithm) {
  TestCa ca;
  ca.dir = TempDir("linesign-ca") + "/ca";
  ca.algorithm = algorithm;
  std::string cmd = absl::StrCat("bash '", SourceDir(), "/deploy/ceremony.sh' --dir '", ca.dir,
                                 "' --algorithm ", algorithm, " --quiet > '", ca.dir, ".out' 2>&1");
  int rc = system(cmd.c_str());
  if (rc != 0) {
    auto out = ReadFile(ca.dir + ".out");
    return absl::InternalError(absl::StrCat("ceremony failed (", WEXITSTATUS(rc), "): ", out.ok() ? *out : ""));
  }
  auto parsed = dev::ReadCeremonyEnv(ca.dir + "/ceremony.env");
  if (!parsed.ok()) return parsed.status();
  std::map<std::string, std::string>& env = *parsed;
  ca.module = env["LINESIGN_MODULE"];
  ca.key_uri = env["LINESIGN_KEY_URI"];
  ca.softhsm2_conf = env["SOFTHSM2_CONF"];
  ca.pin_file = ca.dir + "/pin";
  ca.root_pem = ca.dir + "/root.pem";
  ca.chain_pem = ca.dir + "/chain.pem";
  absl::Time now = absl::Now();
  auto station_ca = tls::MakeTlsCa("linesign test station CA", now - absl::Hours(1), now + absl::Hours(24 * 30));
  if (!station_ca.ok()) return station_ca.status();
  ca.station_ca = *station_ca;
  auto server = tls::IssueLeaf(ca.station_ca, {.common_name = "localhost", .dns_names = {"localhost"},
                                               .ip_addresses = {"127.0.0.1", "::1"}, .server = true,
                                               .not_before = now - absl::Hours(1),
                                               .not_after = now + absl::Hours(24 * 30)});
  if (!server.ok()) return server.status();
  std::string tls_dir = ca.dir + "/tls";
  mkdir(tls_dir.c_str(), 0700);
  for (auto st : {WriteFile(tls_dir + "/ca.pem", ca.station_ca.certificate_pem),
                  WriteFile(tls_dir + "/server.pem", server->certificate_pem),
                  WriteFile(tls_dir + "/server.key", server->key_pem, 0600)}) {
    if (!st.ok()) return st;
  }
  return ca;
}

v1::ServerConfig TestCa::Config(const std::string& db_path) const {
  v1::ServerConfig c;
  c.set_listen("127.0.0.1:0");
  c.mutable_http()->set_listen("127.0.0.1:0");  // never the default 9443: tests run side by side
  auto* h = c.mutable_hsm();
  h->set_module(module);
  h->set_key_uri(key_uri);
  h->set_pin_file(pin_file);
  (*h->mutable_module_env())["SOFTHSM2_CONF"] = softhsm2_conf;
  c.mutable_ca()->set_chain_file(chain_pem);
  c.mutable_store()->mutable_sqlite()->set_path(db_path);
  v1::Profile& device = (*c.mutable_profiles())["device"];
  device.set_validity_days(365);
  for (const char* k : {"ec-p256", "ec-p384", "ed25519", "rsa"}) device.add_key_types(k);
  device.add_san_types("dns");
  device.add_san_types("ip");
  v1::Profile& server = (*c.mutable_profiles())["server"];
  server.set_validity_days(30);
  server.add_extended_key_usages("serverAuth");
  server.add_san_types("dns");
  v1::Profile& serial = (*c.mutable_profiles())["serial"];
  serial.add_key_types("ec-p256");
  serial.add_subject_attributes("CN");
  serial.add_subject_attributes("O");
  (*serial.mutable_subject_patterns())["CN"] = "^[A-Z0-9]{12}$";
  serial.add_san_types("dns");
  (*serial.mutable_san_patterns())["dns"] = "[a-z0-9-]+\\.devices\\.example";
  serial.set_crl_distribution_point("http://crl.example.com/linesign.crl");
  serial.add_policy_oids("1.3.6.1.4.1.55555.1.1");
  serial.add_key_usages("digitalSignature");
  serial.add_key_usages("keyAgreement");
  c.set_default_profile("device");
  c.mutable_signer()->set_workers(2);
  auto* t = c.mutable_tls();
  t->set_certificate_file(dir + "/tls/server.pem");
  t->set_key_file(dir + "/tls/server.key");
  t->set_client_ca_file(dir + "/tls/ca.pem");
  v1::AccessRule* station = c.add_access();
  station->set_identity("station-1");
  station->add_profiles("device");
  station->add_profiles("server");
  station->add_profiles("serial");
  v1::AccessRule* line = c.add_access();
  line->set_identity_pattern("line[0-9]+-st[0-9]+");
  line->add_profiles("device");
  v1::AccessRule* admin = c.add_access();
  admin->set_identity("admin");
  admin->set_admin(true);
  config::ApplyDefaults(&c);
  return c;
}

tls::KeyAndCertificate TestCa::StationCredentials(const std::string& identity, tls::LeafSpec spec) const {
  absl::Time now = absl::Now();
  spec.common_name = identity;
  spec.station_credential = true;
  if (spec.not_before == absl::Time()) spec.not_before = now - absl::Minutes(5);
  if (spec.not_after == absl::Time()) spec.not_after = now + absl::Hours(24);
  auto leaf = tls::IssueLeaf(station_ca, spec);
  if (!leaf.ok()) abort();
  return *leaf;
}

std::shared_ptr<grpc::Channel> TestCa::ChannelWith(const std::string& address,
                                                   const tls::KeyAndCertificate& client) const {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = station_ca.certificate_pem;
  options.pem_private_key = client.key_pem;
  options.pem_cert_chain = client.certificate_pem;
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // one connection per channel: per-test credentials
  return grpc::CreateCustomChannel(address, grpc::SslCredentials(options), args);
}

std::shared_ptr<grpc::Channel> TestCa::Channel(const std::string& address, const std::string& identity) const {
  return ChannelWith(address, StationCredentials(identity));
}

}  // namespace linesign::testing
