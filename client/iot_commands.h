// The `linesign iot ...` commands: AWS IoT Core registration through the server's IotAdministration service.
#ifndef LINESIGN_CLIENT_IOT_COMMANDS_H_
#define LINESIGN_CLIENT_IOT_COMMANDS_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "CLI/CLI.hpp"

namespace linesign::client {

struct RegisterCaOptions {
  std::string target;
  std::string mode = "default";  // default | sni-only
  bool auto_registration = false;
  bool no_activate = false;
  int timeout_s = 120;
};

// AddRegisterCaCommand adds `register-ca` under `iot` (the caller adds the connection options to it).
CLI::App* AddRegisterCaCommand(CLI::App* iot, RegisterCaOptions* options);

// RunRegisterCa calls RegisterCaCertificate and prints the registration, one "key: value" per line; returns the
// exit code (1 with "linesign: iot register-ca failed: CODE: message" on failure).
int RunRegisterCa(const RegisterCaOptions& options, const std::shared_ptr<grpc::Channel>& channel);

// CaStatusCommands are `ca-status`, `activate-ca` and `deactivate-ca`, each with --target.
struct CaStatusCommands {
  std::string target;
  CLI::App* status = nullptr;
  CLI::App* activate = nullptr;
  CLI::App* deactivate = nullptr;
};

// AddCaStatusCommands adds the three under `iot` and returns them (the caller adds the connection options).
void AddCaStatusCommands(CLI::App* iot, CaStatusCommands* commands);

// RunCaStatus runs whichever of them was given; prints the CA's registration, one "key: value" per line, or
// "not registered". Returns the exit code.
int RunCaStatus(const CaStatusCommands& commands, const std::shared_ptr<grpc::Channel>& channel);

// WaitOptions are `linesign iot wait SERIAL [--target T] [--timeout D]`.
struct WaitOptions {
  std::string serial;
  std::string target;          // empty: the server's only target
  std::string timeout = "30s"; // a duration (500ms, 30s, 5m) or seconds; the server caps it at 10 minutes
};

// AddWaitCommand adds `wait` under `iot` (the caller adds the connection options).
CLI::App* AddWaitCommand(CLI::App* iot, WaitOptions* options);

// RunWait calls AwaitIotRegistration and prints the registration, one "key: value" per line. Exit code 0 when
// registered, 2 when the registration failed (the reason printed), 1 for any other answer ("linesign: iot wait
// failed: CODE: message", DEADLINE_EXCEEDED when it is still pending) or a timeout that is not a duration.
int RunWait(const WaitOptions& options, const std::shared_ptr<grpc::Channel>& channel);

}  // namespace linesign::client

#endif  // LINESIGN_CLIENT_IOT_COMMANDS_H_
