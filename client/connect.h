// How stations and tools reach a linesign server: mTLS with a client certificate (the normal case), or
// plaintext to a server configured with tls.insecure on loopback.
#ifndef LINESIGN_CLIENT_CONNECT_H_
#define LINESIGN_CLIENT_CONNECT_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace linesign::client {

struct TlsFiles {
  // A directory holding ca.pem, cert.pem and key.pem (what `linesign-server --dev` writes to DIR/station and
  // DIR/admin). The three options below override its files one by one.
  std::string tls_dir;
  std::string ca_file;    // PEM bundle that issued the server's certificate
  std::string cert_file;  // this station's certificate (PEM, may be followed by its intermediates)
  std::string key_file;   // its private key (PEM)
  bool insecure = false;  // plaintext; for a server with tls.insecure only
};

// Credentials reads the files. InvalidArgument naming the option when one is missing or unreadable, or when
// neither TLS files nor insecure were given.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> Credentials(const TlsFiles& files);

// Connect opens a channel to `server` (host:port) with `credentials`, with its own connection.
std::shared_ptr<grpc::Channel> Connect(const std::string& server,
                                       const std::shared_ptr<grpc::ChannelCredentials>& credentials);

}  // namespace linesign::client

#endif  // LINESIGN_CLIENT_CONNECT_H_
