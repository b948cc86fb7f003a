#include "tests/testing/test_ca.h"

#include <stdlib.h>
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
  return ca;
}

v1::ServerConfig TestCa::Config(const std::string& db_path) const {
  v1::ServerConfig c;
  c.set_listen("127.0.0.1:0");
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
  c.set_default_profile("device");
  c.mutable_signer()->set_workers(2);
  config::ApplyDefaults(&c);
  return c;
}

std::shared_ptr<grpc::Channel> TestCa::Channel(const std::string& address, const std::string& identity) const {
  return grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
}

}  // namespace linesign::testing
