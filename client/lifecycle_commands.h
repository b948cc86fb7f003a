// The administrators' lifecycle commands of `linesign` (issue 11): get, renew, rekey, events, and the lifecycle
// options of list (--status, --subject, --expiring-within, --json). main.cc adds them and runs the one chosen.
#ifndef LINESIGN_CLIENT_LIFECYCLE_COMMANDS_H_
#define LINESIGN_CLIENT_LIFECYCLE_COMMANDS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "linesign/v1/admin.grpc.pb.h"

namespace linesign::client {

struct LifecycleOptions {
  std::string serial;      // get, renew, rekey: the positional SERIAL
  std::string csr_path;    // rekey --csr
  std::string out;         // get/renew/rekey --out: the certificate (PEM)
  std::string chain_out;   // renew/rekey --chain-out
  int64_t after = 0;       // events --after
  bool follow = false;     // events --follow
  bool json = false;       // --json: one JSON object per line (protobuf's JSON mapping)
  // list's lifecycle options.
  std::string status;
  std::string subject;
  std::string expiring_within;  // "60d", "12h", "30m"

  CLI::App* get = nullptr;
  CLI::App* renew = nullptr;
  CLI::App* rekey = nullptr;
  CLI::App* events = nullptr;
};

// AddLifecycleCommands adds get, renew, rekey and events to `app`; `connect` adds each one's connection options.
void AddLifecycleCommands(CLI::App& app, LifecycleOptions* o, const std::function<void(CLI::App*)>& connect);
// AddListLifecycleOptions adds --status, --subject, --expiring-within and --json to `list`.
void AddListLifecycleOptions(CLI::App* list, LifecycleOptions* o);
// ApplyListLifecycleOptions sets the lifecycle filters on `request` (expiring_before = now + --expiring-within).
// InvalidArgument naming the option for a duration it cannot read.
absl::Status ApplyListLifecycleOptions(const LifecycleOptions& o, absl::Time now, v1::ListCertificatesRequest* request);
// ParseWithin reads "60d", "12h", "30m", "45s" (a positive whole number and a unit).
absl::StatusOr<absl::Duration> ParseWithin(const std::string& text);

// RunLifecycleCommand runs the chosen lifecycle command, if one was chosen: its exit code, or nullopt when none
// of them was. Errors are one line on standard error.
std::optional<int> RunLifecycleCommand(const LifecycleOptions& o, v1::Administration::Stub* admin, int timeout_s);

// ToJson renders a message as one line of protobuf's JSON mapping.
std::string ToJson(const google::protobuf::Message& message);

}  // namespace linesign::client

#endif  // LINESIGN_CLIENT_LIFECYCLE_COMMANDS_H_
