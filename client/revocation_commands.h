// RevocationCommands: the `linesign revoke`, `linesign crl` and `linesign export` subcommands (issue 11), kept
// apart from main.cc's other commands.
#ifndef LINESIGN_CLIENT_REVOCATION_COMMANDS_H_
#define LINESIGN_CLIENT_REVOCATION_COMMANDS_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "client/connect.h"

namespace linesign::client {

// ParseRevocationReason reads --reason: an RFC 5280 name in kebab case ("key-compromise") or camel case
// ("keyCompromise"), or its number. The server decides which reasons it accepts (certificateHold is refused
// there, counted and audited). InvalidArgument listing the names for anything else.
absl::StatusOr<int> ParseRevocationReason(const std::string& text);

class RevocationCommands {
 public:
  // AddConnection adds --server and the TLS options to a subcommand (main.cc's AddConnectionOptions).
  using AddConnection = std::function<void(CLI::App*)>;
  // Registers the subcommands on `app`; the object must outlive the parse.
  RevocationCommands(CLI::App* app, const AddConnection& add_connection);

  // chosen says whether one of these subcommands was given.
  bool chosen() const;
  // Run runs it over `channel`; returns the process's exit code. Errors are one line on stderr.
  int Run(const std::shared_ptr<grpc::Channel>& channel, int timeout_s);

 private:
  int Revoke(const std::shared_ptr<grpc::Channel>& channel, int timeout_s);
  int Crl(const std::shared_ptr<grpc::Channel>& channel, int timeout_s);
  int Export(const std::shared_ptr<grpc::Channel>& channel, int timeout_s);

  CLI::App* revoke_;
  CLI::App* crl_;
  CLI::App* export_;
  std::string serial_;
  std::string reason_ = "unspecified";
  std::string out_;
  bool pem_ = false;
  bool pkcs7_ = false;
  bool json_ = false;
};

}  // namespace linesign::client

#endif  // LINESIGN_CLIENT_REVOCATION_COMMANDS_H_
