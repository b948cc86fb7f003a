#include "client/connect.h"

#include "absl/strings/str_cat.h"
#include "common/openssl_util.h"

namespace linesign::client {
namespace {

absl::StatusOr<std::string> Load(const std::string& option, const std::string& explicit_path,
                                 const std::string& dir, const std::string& name) {
  std::string path = !explicit_path.empty() ? explicit_path : (dir.empty() ? "" : absl::StrCat(dir, "/", name));
  if (path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(option, " (or --tls-dir) is required"));
  }
  auto data = ReadFile(path);
  if (!data.ok()) return absl::InvalidArgumentError(absl::StrCat(option, ": ", data.status().message()));
  return data;
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> Credentials(const TlsFiles& f) {
  if (f.insecure) {
    if (!f.tls_dir.empty() || !f.ca_file.empty() || !f.cert_file.empty() || !f.key_file.empty()) {
      return absl::InvalidArgumentError("--insecure cannot be combined with --tls-dir, --cacert, --cert or --key");
    }
    return grpc::InsecureChannelCredentials();
  }
  if (f.tls_dir.empty() && f.ca_file.empty() && f.cert_file.empty() && f.key_file.empty()) {
    return absl::InvalidArgumentError(
        "no credentials: give --tls-dir DIR (ca.pem, cert.pem, key.pem), or --cacert, --cert and --key; "
        "--insecure only for a server running with tls.insecure");
  }
  grpc::SslCredentialsOptions options;
  auto ca = Load("--cacert", f.ca_file, f.tls_dir, "ca.pem");
  if (!ca.ok()) return ca.status();
  auto cert = Load("--cert", f.cert_file, f.tls_dir, "cert.pem");
  if (!cert.ok()) return cert.status();
  auto key = Load("--key", f.key_file, f.tls_dir, "key.pem");
  if (!key.ok()) return key.status();
  options.pem_root_certs = *std::move(ca);
  options.pem_cert_chain = *std::move(cert);
  options.pem_private_key = *std::move(key);
  return grpc::SslCredentials(options);
}

std::shared_ptr<grpc::Channel> Connect(const std::string& server,
                                       const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // A CRL with 100,000 entries is about 4 MB, gRPC's default limit for an answer (bench/README.md).
  args.SetMaxReceiveMessageSize(64 << 20);
  return grpc::CreateCustomChannel(server, credentials, args);
}

}  // namespace linesign::client
