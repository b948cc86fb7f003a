// linesign: the station and administrator command line.
#include <grpcpp/grpcpp.h>
#include <openssl/rand.h>

#include <iostream>
#include <map>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"

#include "CLI/CLI.hpp"
#include "client/connect.h"
#include "client/iot_commands.h"
#include "client/iot_job_commands.h"
#include "client/keygen.h"
#include "client/lifecycle_commands.h"
#include "client/output.h"
#include "client/revocation_commands.h"
#include "common/openssl_util.h"
#include "common/utf8.h"
#include "linesign/v1/admin.grpc.pb.h"
#include "linesign/v1/ca.grpc.pb.h"

namespace {

int Fail(const std::string& what) {
  std::cerr << "linesign: " << what << "\n";
  return 1;
}

int FailRpc(const std::string& rpc, const grpc::Status& st) {
  return Fail(rpc + " failed: " + linesign::StatusCodeName(st.error_code()) + ": " + st.error_message());
}

std::string RandomRequestId() {
  unsigned char b[16];
  RAND_bytes(b, sizeof(b));
  return linesign::Hex(std::string(reinterpret_cast<char*>(b), sizeof(b)));
}

// AddConnectionOptions adds --server and the TLS options to a subcommand that talks to the server.
void AddConnectionOptions(CLI::App* cmd, std::string* server, linesign::client::TlsFiles* tls) {
  cmd->add_option("--server", *server, "host:port of the linesign server")->required();
  cmd->add_option("--tls-dir", tls->tls_dir, "Directory with ca.pem, cert.pem and key.pem (e.g. DEV_DIR/station)");
  cmd->add_option("--cacert", tls->ca_file, "PEM CA bundle that issued the server's certificate");
  cmd->add_option("--cert", tls->cert_file, "This station's client certificate (PEM)");
  cmd->add_option("--key", tls->key_file, "Its private key (PEM)");
  cmd->add_flag("--insecure", tls->insecure, "Plaintext, for a loopback server with tls.insecure");
}

// ParseTime reads an RFC 3339 time ("2025-01-31T00:00:00Z") into `out`; false when it is not one.
bool ParseTime(const std::string& text, google::protobuf::Timestamp* out) {
  absl::Time t;
  std::string err;
  if (!absl::ParseTime(absl::RFC3339_full, text, &t, &err)) return false;
  out->set_seconds(absl::ToUnixSeconds(t));
  return true;
}

std::string FormatSeconds(int64_t seconds) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(seconds), absl::UTCTimeZone());
}

// ListLine is one certificate as `linesign list` prints it: serial, status, issued, not_after, then the
// station-supplied text quoted and escaped (QuoteForDisplay), so a value can never look like another field or line.
std::string ListLine(const linesign::v1::CertificateSummary& c) {
  using linesign::QuoteForDisplay;
  std::vector<std::string> sans;
  for (const auto& san : c.san()) {
    sans.push_back(absl::StrCat(linesign::QuoteForDisplayUnlessPlain(san.type()), ":",
                                QuoteForDisplay(san.raw_value().empty() ? san.value() : san.raw_value())));
  }
  return absl::StrCat(QuoteForDisplay(c.serial_hex()), " ", QuoteForDisplay(c.status()),
                      " issued=", FormatSeconds(c.issued_at().seconds()),
                      " not_after=", FormatSeconds(c.not_after().seconds()), " profile=", QuoteForDisplay(c.profile()),
                      " station=", QuoteForDisplay(c.station()), " request_id=", QuoteForDisplay(c.request_id()),
                      " subject=", QuoteForDisplay(c.subject()), " sans=[", absl::StrJoin(sans, ", "), "]");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"linesign: sign device CSRs with a linesign CA"};
  app.require_subcommand(1);
  std::string server, csr_path, profile, out, chain_out, request_id;
  int timeout_s = 30;
  linesign::client::TlsFiles tls;

  auto* sign = app.add_subcommand("sign", "Send a CSR (PEM or DER) and write the certificate");
  AddConnectionOptions(sign, &server, &tls);
  sign->add_option("--csr", csr_path, "CSR file, PEM or DER")->required();
  sign->add_option("--profile", profile, "Profile name (default: the server's default profile)");
  sign->add_option("--request-id", request_id, "Idempotency key; a retry with the same id returns the same "
                                               "certificate (default: random)");
  sign->add_option("--out", out, "Where to write the certificate (PEM); - for standard output")->required();
  sign->add_option("--chain-out", chain_out, "Where to write the CA chain (PEM); - for standard output");
  sign->add_option("--timeout", timeout_s, "Deadline in seconds")->capture_default_str();

  std::string subject, key_out, csr_out, algorithm = "ec-p256";
  std::vector<std::string> sans;
  auto* keygen = app.add_subcommand("keygen", "Generate a key pair and a CSR locally");
  keygen->add_option("--subject", subject, "Subject, e.g. \"/CN=DEVICE0001/O=Acme\"")->required();
  keygen->add_option("--key-out", key_out, "Private key file to write (PEM, mode 0600)")->required();
  keygen->add_option("--csr-out", csr_out, "CSR file to write (PEM)")->required();
  keygen->add_option("--algorithm", algorithm, "ec-p256, ec-p384, ed25519, rsa-2048, rsa-3072, rsa-4096")
      ->capture_default_str();
  keygen->add_option("--san", sans, "subjectAltName entries, e.g. DNS:dev1.example, IP:10.0.0.1 (repeatable)");
  std::string passphrase_file;
  keygen->add_option("--passphrase-file", passphrase_file,
                     "Encrypt the key (PKCS#8, AES-256-CBC, PBKDF2-HMAC-SHA256) with the first line of this file");

  auto* chain = app.add_subcommand("ca-chain", "Print (or write) the CA chain the server issues under");
  AddConnectionOptions(chain, &server, &tls);
  chain->add_option("--out", out, "Write the chain to this file instead of stdout");

  std::string serial;
  auto* show = app.add_subcommand("show", "Administrators: print the record of an issued certificate");
  AddConnectionOptions(show, &server, &tls);
  show->add_option("--serial", serial, "Serial, hexadecimal")->required();
  show->add_option("--out", out, "Also write the certificate (PEM) to this file");

  auto* stats = app.add_subcommand("stats", "Administrators: print the server's counters");
  AddConnectionOptions(stats, &server, &tls);

  auto* iot = app.add_subcommand("iot", "Administrators: AWS IoT Core registration");
  iot->require_subcommand(1);
  linesign::client::RegisterCaOptions register_ca_options;
  auto* register_ca = linesign::client::AddRegisterCaCommand(iot, &register_ca_options);
  AddConnectionOptions(register_ca, &server, &tls);
  linesign::client::CaStatusCommands ca_status;
  linesign::client::AddCaStatusCommands(iot, &ca_status);
  for (CLI::App* cmd : {ca_status.status, ca_status.activate, ca_status.deactivate}) {
    AddConnectionOptions(cmd, &server, &tls);
  }
  linesign::client::WaitOptions wait_options;
  auto* iot_wait = linesign::client::AddWaitCommand(iot, &wait_options);
  AddConnectionOptions(iot_wait, &server, &tls);
  // Bulk registration jobs and status (issue 10): iot register, iot status.
  linesign::client::IotJobCommands iot_jobs;
  linesign::client::AddIotJobCommands(iot, &iot_jobs);
  for (CLI::App* cmd : {iot_jobs.register_job, iot_jobs.status}) AddConnectionOptions(cmd, &server, &tls);

  std::string list_profile, list_station, issued_after, issued_before, expiring_before;
  uint32_t page_size = 100;
  bool all_pages = false;
  auto* list = app.add_subcommand("list", "Administrators: list issued certificates, one line each, oldest first");
  AddConnectionOptions(list, &server, &tls);
  list->add_option("--profile", list_profile, "Only certificates of this profile");
  list->add_option("--station", list_station, "Only certificates this station identity requested");
  list->add_option("--issued-after", issued_after, "Only certificates issued at or after this RFC 3339 time");
  list->add_option("--issued-before", issued_before, "Only certificates issued before this RFC 3339 time");
  list->add_option("--expiring-before", expiring_before, "Only certificates whose not_after is before this time");
  list->add_option("--page-size", page_size, "Certificates per page, 1 to 1000")->capture_default_str();
  list->add_flag("--all", all_pages, "Follow every page (default: the first page, then the next page token)");

  // Revocation (issue 11): revoke, crl, export.
  linesign::client::RevocationCommands revocation(
      &app, [&](CLI::App* cmd) { AddConnectionOptions(cmd, &server, &tls); });
  // Lifecycle (issue 11): get, renew, rekey, events; list's --status, --subject, --expiring-within, --json.
  linesign::client::LifecycleOptions lifecycle;
  linesign::client::AddListLifecycleOptions(list, &lifecycle);
  linesign::client::AddLifecycleCommands(app, &lifecycle,
                                         [&](CLI::App* cmd) { AddConnectionOptions(cmd, &server, &tls); });

  CLI11_PARSE(app, argc, argv);

  if (*keygen) {
    auto key = linesign::client::GenerateKey(algorithm);
    if (!key.ok()) return Fail(std::string(key.status().message()));
    auto csr = linesign::client::MakeCsr(key->get(), subject, sans);
    if (!csr.ok()) return Fail(std::string(csr.status().message()));
    std::string key_pem = linesign::client::PrivateKeyPem(key->get());
    if (!passphrase_file.empty()) {
      auto passphrase = linesign::client::ReadPassphraseFile(passphrase_file);
      if (!passphrase.ok()) return Fail(std::string(passphrase.status().message()));
      auto encrypted = linesign::client::EncryptedPrivateKeyPem(key->get(), *passphrase);
      if (!encrypted.ok()) return Fail(std::string(encrypted.status().message()));
      key_pem = *std::move(encrypted);
    }
    if (auto st = linesign::client::WriteOutput(key_out, key_pem, 0600); !st.ok()) {
      return Fail(std::string(st.message()));
    }
    if (auto st = linesign::client::WriteOutput(csr_out, linesign::PemEncode("CERTIFICATE REQUEST", *csr));
        !st.ok()) {
      return Fail(std::string(st.message()));
    }
    return 0;
  }

  auto credentials = linesign::client::Credentials(tls);
  if (!credentials.ok()) return Fail(std::string(credentials.status().message()));
  auto channel = linesign::client::Connect(server, *credentials);
  if (revocation.chosen()) return revocation.Run(channel, timeout_s);
  auto stub = linesign::v1::CertificateAuthority::NewStub(channel);
  auto admin = linesign::v1::Administration::NewStub(channel);
  if (auto code = linesign::client::RunLifecycleCommand(lifecycle, admin.get(), timeout_s)) return *code;
  if (*register_ca) return linesign::client::RunRegisterCa(register_ca_options, channel);
  if (*iot_wait) return linesign::client::RunWait(wait_options, channel);
  if (*ca_status.status || *ca_status.activate || *ca_status.deactivate) {
    return linesign::client::RunCaStatus(ca_status, channel);
  }
  if (*iot_jobs.register_job || *iot_jobs.status) return linesign::client::RunIotJobCommands(iot_jobs, channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(timeout_s));
  if (*chain) {
    linesign::v1::GetCaChainResponse resp;
    grpc::Status st = stub->GetCaChain(&ctx, {}, &resp);
    if (!st.ok()) return FailRpc("ca-chain", st);
    if (out.empty()) {
      std::cout << resp.chain_pem();
    } else if (auto ws = linesign::client::WriteOutput(out, resp.chain_pem()); !ws.ok()) {
      return Fail(std::string(ws.message()));
    }
    return 0;
  }

  if (*show) {
    linesign::v1::GetCertificateRequest req;
    req.set_serial_hex(serial);
    linesign::v1::GetCertificateResponse resp;
    grpc::Status st = admin->GetCertificate(&ctx, req, &resp);
    if (!st.ok()) return FailRpc("show", st);
    // Station-supplied values are quoted and escaped (QuoteForDisplay): a newline or a comma in a SAN, a subject
    // or a request id can never look like another line or another SAN. One line per SAN.
    using linesign::QuoteForDisplay;
    std::cout << "serial:     " << resp.serial_hex() << "\nsubject:    " << QuoteForDisplay(resp.subject()) << "\n";
    for (const auto& san : resp.san()) {
      std::cout << "san:        " << linesign::QuoteForDisplayUnlessPlain(san.type()) << ":"
                << QuoteForDisplay(san.raw_value().empty() ? san.value() : san.raw_value()) << "\n";
    }
    if (resp.san().empty() && !resp.sans().empty()) {  // a server that predates typed SANs
      std::cout << "sans:       " << QuoteForDisplay(resp.sans()) << "\n";
    }
    std::cout << "profile:    " << QuoteForDisplay(resp.profile()) << "\nstation:    " << QuoteForDisplay(resp.station())
              << "\nrequest_id: " << QuoteForDisplay(resp.request_id())
              << "\nnot_before: " << absl::FormatTime(absl::FromUnixSeconds(resp.not_before().seconds()))
              << "\nnot_after:  " << absl::FormatTime(absl::FromUnixSeconds(resp.not_after().seconds()))
              << "\nissued_at:  " << absl::FormatTime(absl::FromUnixSeconds(resp.issued_at().seconds())) << "\n";
    if (!out.empty()) {
      auto ws = linesign::client::WriteOutput(out, linesign::PemEncode("CERTIFICATE", resp.certificate_der()));
      if (!ws.ok()) return Fail(std::string(ws.message()));
    }
    return 0;
  }
  if (*stats) {
    linesign::v1::GetStatsResponse resp;
    grpc::Status st = admin->GetStats(&ctx, {}, &resp);
    if (!st.ok()) return FailRpc("stats", st);
    std::map<std::string, uint64_t> sorted(resp.answers().begin(), resp.answers().end());
    for (const auto& [key, n] : sorted) std::cout << key << " " << n << "\n";
    std::cout << "queued " << resp.queued() << "\ncertificates_recorded " << resp.certificates_recorded() << "\n";
    return 0;
  }

  if (*list) {
    linesign::v1::ListCertificatesRequest req;
    req.set_profile(list_profile);
    req.set_station(list_station);
    req.set_page_size(page_size);
    for (auto [flag, text, field] :
         {std::tuple{"--issued-after", &issued_after, req.mutable_issued_after()},
          std::tuple{"--issued-before", &issued_before, req.mutable_issued_before()},
          std::tuple{"--expiring-before", &expiring_before, req.mutable_expiring_before()}}) {
      if (text->empty()) continue;
      if (!ParseTime(*text, field)) {
        return Fail(absl::StrCat(flag, " '", *text, "' is not an RFC 3339 time such as 2025-01-31T00:00:00Z"));
      }
    }
    if (issued_after.empty()) req.clear_issued_after();
    if (issued_before.empty()) req.clear_issued_before();
    if (expiring_before.empty()) req.clear_expiring_before();
    if (auto st = linesign::client::ApplyListLifecycleOptions(lifecycle, absl::Now(), &req); !st.ok()) {
      return Fail(std::string(st.message()));
    }
    for (;;) {
      linesign::v1::ListCertificatesResponse resp;
      grpc::ClientContext page_ctx;
      page_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(timeout_s));
      grpc::Status st = admin->ListCertificates(&page_ctx, req, &resp);
      if (!st.ok()) return FailRpc("list", st);
      for (const auto& c : resp.certificates()) {
        std::cout << (lifecycle.json ? linesign::client::ToJson(c) : ListLine(c)) << "\n";
      }
      if (resp.next_page_token().empty()) break;
      if (!all_pages) {
        std::cerr << "linesign: more certificates match; --all lists every page\n";
        break;
      }
      req.set_page_token(resp.next_page_token());
    }
    return 0;
  }

  auto csr = linesign::ReadFile(csr_path);
  if (!csr.ok()) return Fail(std::string(csr.status().message()));
  linesign::v1::SignCsrRequest req;
  if (csr->rfind("-----BEGIN", 0) == 0) {
    req.set_csr_pem(*csr);
  } else {
    req.set_csr_der(*csr);
  }
  req.set_profile(profile);
  req.set_request_id(request_id.empty() ? RandomRequestId() : request_id);
  linesign::v1::SignCsrResponse resp;
  grpc::Status st = stub->SignCsr(&ctx, req, &resp);
  if (!st.ok()) return FailRpc("sign", st);
  if (auto ws = linesign::client::WriteOutput(out, resp.certificate_pem()); !ws.ok()) {
    return Fail(std::string(ws.message()));
  }
  if (!chain_out.empty()) {
    if (auto ws = linesign::client::WriteOutput(chain_out, resp.chain_pem()); !ws.ok()) {
      return Fail(std::string(ws.message()));
    }
  }
  std::cerr << "issued serial " << resp.serial_hex() << (resp.replayed() ? " (replayed: issued earlier)" : "")
            << " -> " << (out == "-" ? "standard output" : out) << "\n";
  return 0;
}
