// linesign: the station and administrator command line.
#include <grpcpp/grpcpp.h>
#include <openssl/rand.h>

#include <iostream>

#include "CLI/CLI.hpp"
#include "client/keygen.h"
#include "common/openssl_util.h"
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

std::unique_ptr<linesign::v1::CertificateAuthority::Stub> Connect(const std::string& server) {
  return linesign::v1::CertificateAuthority::NewStub(
      grpc::CreateChannel(server, grpc::InsecureChannelCredentials()));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"linesign: sign device CSRs with a linesign CA"};
  app.require_subcommand(1);
  std::string server, csr_path, profile, out, chain_out, request_id;
  int timeout_s = 30;

  auto* sign = app.add_subcommand("sign", "Send a CSR (PEM or DER) and write the certificate");
  sign->add_option("--server", server, "host:port of the linesign server")->required();
  sign->add_option("--csr", csr_path, "CSR file, PEM or DER")->required();
  sign->add_option("--profile", profile, "Profile name (default: the server's default profile)");
  sign->add_option("--request-id", request_id, "Idempotency key; a retry with the same id returns the same "
                                               "certificate (default: random)");
  sign->add_option("--out", out, "Where to write the certificate (PEM)")->required();
  sign->add_option("--chain-out", chain_out, "Where to write the CA chain (PEM)");
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

  auto* chain = app.add_subcommand("ca-chain", "Print (or write) the CA chain the server issues under");
  chain->add_option("--server", server, "host:port of the linesign server")->required();
  chain->add_option("--out", out, "Write the chain to this file instead of stdout");

  CLI11_PARSE(app, argc, argv);

  if (*keygen) {
    auto key = linesign::client::GenerateKey(algorithm);
    if (!key.ok()) return Fail(std::string(key.status().message()));
    auto csr = linesign::client::MakeCsr(key->get(), subject, sans);
    if (!csr.ok()) return Fail(std::string(csr.status().message()));
    if (auto st = linesign::WriteFile(key_out, linesign::client::PrivateKeyPem(key->get()), 0600); !st.ok()) {
      return Fail(std::string(st.message()));
    }
    if (auto st = linesign::WriteFile(csr_out, linesign::PemEncode("CERTIFICATE REQUEST", *csr)); !st.ok()) {
      return Fail(std::string(st.message()));
    }
    return 0;
  }

  auto stub = Connect(server);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(timeout_s));
  if (*chain) {
    linesign::v1::GetCaChainResponse resp;
    grpc::Status st = stub->GetCaChain(&ctx, {}, &resp);
    if (!st.ok()) return FailRpc("ca-chain", st);
    if (out.empty()) {
      std::cout << resp.chain_pem();
    } else if (auto ws = linesign::WriteFile(out, resp.chain_pem()); !ws.ok()) {
      return Fail(std::string(ws.message()));
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
  if (auto ws = linesign::WriteFile(out, resp.certificate_pem()); !ws.ok()) return Fail(std::string(ws.message()));
  if (!chain_out.empty()) {
    if (auto ws = linesign::WriteFile(chain_out, resp.chain_pem()); !ws.ok()) return Fail(std::string(ws.message()));
  }
  std::cerr << "issued serial " << resp.serial_hex() << (resp.replayed() ? " (replayed: issued earlier)" : "")
            << " -> " << out << "\n";
  return 0;
}
