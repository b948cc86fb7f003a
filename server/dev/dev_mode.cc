#include "server/dev/dev_mode.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/log.h"
#include "common/openssl_util.h"
#include "common/status_macros.h"
#include "linesign/v1/config.pb.h"
#include "server/config/config.h"
#include "server/tls/tls_pki.h"

namespace linesign::dev {
namespace {

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

}  // namespace

absl::StatusOr<std::map<std::string, std::string>> ReadCeremonyEnv(const std::string& path) {
  LINESIGN_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  std::map<std::string, std::string> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    auto eq = line.find('=');
    if (eq == absl::string_view::npos || absl::StartsWith(line, "#")) continue;
    absl::string_view v = line.substr(eq + 1);
    if (v.size() >= 2 && (v.front() == '\'' || v.front() == '"') && v.back() == v.front()) {
      v = v.substr(1, v.size() - 2);
    }
    out[std::string(line.substr(0, eq))] = std::string(v);
  }
  return out;
}

namespace {

std::string Absolute(const std::string& path) {
  if (!path.empty() && path[0] == '/') return path;
  char buf[4096];
  if (getcwd(buf, sizeof(buf)) == nullptr) return path;
  return absl::StrCat(buf, "/", path);
}

}  // namespace

std::string FindCeremonyScript() {
  for (const char* candidate : {LINESIGN_CEREMONY_INSTALLED, LINESIGN_CEREMONY_SOURCE}) {
    if (Exists(candidate)) return candidate;
  }
  return LINESIGN_CEREMONY_SOURCE;
}

namespace {

// The development station CA's identities.
constexpr char kStationIdentity[] = "station-1";
constexpr char kAdminIdentity[] = "admin";

// PrepareTls creates DIR/tls (station CA + server certificate for localhost, 127.0.0.1 and ::1), DIR/station and
// DIR/admin, unless DIR/tls/ca.pem exists.
absl::Status PrepareTls(const std::string& dir) {
  const std::string tls = absl::StrCat(dir, "/tls");
  if (Exists(tls + "/ca.pem")) return absl::OkStatus();
  LogInfo("development mode: creating a station CA, the server's TLS certificate and client credentials for '",
          kStationIdentity, "' and '", kAdminIdentity, "' in ", dir);
  if (mkdir(tls.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", tls, ": ", strerror(errno)));
  }
  absl::Time now = absl::Now();
  absl::Time until = now + absl::Hours(24 * 825);
  LINESIGN_ASSIGN_OR_RETURN(tls::KeyAndCertificate ca,
                            tls::MakeTlsCa("linesign development station CA", now - absl::Minutes(5), until));
  tls::LeafSpec server{.common_name = "localhost", .dns_names = {"localhost"},
                       .ip_addresses = {"127.0.0.1", "::1"}, .server = true,
                       .not_before = now - absl::Minutes(5), .not_after = until};
  LINESIGN_ASSIGN_OR_RETURN(tls::KeyAndCertificate server_cert, tls::IssueLeaf(ca, server));
  for (const char* who : {kStationIdentity, kAdminIdentity}) {
    // Station credentials carry the station EKU, so tls.require_station_marker can be turned on with them.
    tls::LeafSpec client{.common_name = who, .not_before = now - absl::Minutes(5), .not_after = until,
                         .station_credential = true};
    LINESIGN_ASSIGN_OR_RETURN(tls::KeyAndCertificate cert, tls::IssueLeaf(ca, client));
    LINESIGN_RETURN_IF_ERROR(tls::WriteCredentials(
        absl::StrCat(dir, "/", std::string(who) == kAdminIdentity ? "admin" : "station"), ca.certificate_pem, cert));
  }
  LINESIGN_RETURN_IF_ERROR(WriteFile(tls + "/server.pem", server_cert.certificate_pem, 0644));
  LINESIGN_RETURN_IF_ERROR(WriteFile(tls + "/server.key", server_cert.key_pem, 0600));
  LINESIGN_RETURN_IF_ERROR(WriteFile(tls + "/ca.key", ca.key_pem, 0600));
  return WriteFile(tls + "/ca.pem", ca.certificate_pem, 0644);  // last: its presence means "complete"
}

}  // namespace

absl::StatusOr<std::string> PrepareDevDirectory(const std::string& dir_in, const std::string& listen,
                                                const std::string& ceremony_script) {
  if (!config::IsLoopback(listen)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--listen ", listen, ": development mode listens on loopback only (127.0.0.1:PORT or [::1]:PORT)"));
  }
  const std::string dir = Absolute(dir_in);
  const std::string config_path = absl::StrCat(dir, "/config.yaml");
  if (Exists(config_path) && Exists(absl::StrCat(dir, "/tls/ca.pem"))) return config_path;

  if (!Exists(absl::StrCat(dir, "/intermediate.pem"))) {
    LogInfo("development mode: creating a SoftHSM2 token, an offline root and an intermediate CA in ", dir);
    std::string cmd = absl::StrCat("bash '", ceremony_script, "' --dir '", dir, "' --quiet >/dev/null");
    int rc = system(cmd.c_str());
    if (rc != 0) {
      return absl::FailedPreconditionError(absl::StrCat("development mode: the CA ceremony (", ceremony_script,
                                                        ") failed with status ", WEXITSTATUS(rc),
                                                        "; see its messages above"));
    }
  }
  auto env = ReadCeremonyEnv(absl::StrCat(dir, "/ceremony.env"));
  if (!env.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("development mode: ", dir, " holds an incomplete CA (", env.status().message(),
                     "); remove the directory and start again"));
  }
  v1::ServerConfig c;
  c.set_listen(listen);
  auto* h = c.mutable_hsm();
  h->set_module((*env)["LINESIGN_MODULE"]);
  h->set_key_uri((*env)["LINESIGN_KEY_URI"]);
  h->set_pin_file(absl::StrCat(dir, "/pin"));
  if (!(*env)["SOFTHSM2_CONF"].empty()) (*h->mutable_module_env())["SOFTHSM2_CONF"] = (*env)["SOFTHSM2_CONF"];
  c.mutable_ca()->set_chain_file(absl::StrCat(dir, "/chain.pem"));
  c.mutable_store()->mutable_sqlite()->set_path(absl::StrCat(dir, "/linesign.db"));
  v1::Profile& device = (*c.mutable_profiles())["device"];
  device.set_validity_days(365);
  for (const char* k : {"ec-p256", "ec-p384", "ed25519", "rsa"}) device.add_key_types(k);
  for (const char* s : {"dns", "ip", "uri", "email"}) device.add_san_types(s);
  c.set_default_profile("device");
  LINESIGN_RETURN_IF_ERROR(PrepareTls(dir));
  auto* t = c.mutable_tls();
  t->set_certificate_file(absl::StrCat(dir, "/tls/server.pem"));
  t->set_key_file(absl::StrCat(dir, "/tls/server.key"));
  t->set_client_ca_file(absl::StrCat(dir, "/tls/ca.pem"));
  t->set_identity("subject_cn");
  v1::AccessRule* station = c.add_access();
  station->set_identity(kStationIdentity);
  for (const auto& [name, profile] : c.profiles()) station->add_profiles(name);
  v1::AccessRule* admin = c.add_access();
  admin->set_identity(kAdminIdentity);
  admin->set_admin(true);
  c.mutable_audit()->set_file(absl::StrCat(dir, "/audit.jsonl"));
  std::string yaml = absl::StrCat(
      "# Generated by linesign-server --dev on its first start. Reusable with --config; edit freely.\n",
      config::ToYaml(c));
  LINESIGN_RETURN_IF_ERROR(WriteFile(config_path, yaml, 0600));
  return config_path;
}

}  // namespace linesign::dev
