// `linesign iot register` (a bulk registration job for certificates already issued) and `linesign iot status`,
// through the server's IotAdministration service (EnqueueIotRegistrations, GetIotRegistrations, GetIotStatus).
#ifndef LINESIGN_CLIENT_IOT_JOB_COMMANDS_H_
#define LINESIGN_CLIENT_IOT_JOB_COMMANDS_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"

namespace linesign::client {

// kMaxJobSerials is the most serials one `iot register --serials FILE` job takes (a larger file is refused: split
// it); kMaxSerialsFileBytes bounds the file read, kMaxSerialLineBytes one line of it.
inline constexpr int kMaxJobSerials = 100000;
inline constexpr int64_t kMaxSerialsFileBytes = 8 << 20;
inline constexpr int kMaxSerialLineBytes = 256;
// kSerialsPerCall is how many serials one EnqueueIotRegistrations / GetIotRegistrations call carries (the server's
// limit).
inline constexpr int kSerialsPerCall = 1000;

struct IotJobOptions {
  std::string target;
  std::string serials_file;
  std::string profile;
  std::string issued_since;  // RFC 3339
  bool no_wait = false;
  double poll_seconds = 1;
  int timeout_s = 60;  // per call
};

// IotJobCommands are `register` and `status` under `iot` (the caller adds the connection options).
struct IotJobCommands {
  IotJobOptions job;
  std::string status_target;
  CLI::App* register_job = nullptr;
  CLI::App* status = nullptr;
};

// AddIotJobCommands adds them under `iot`.
void AddIotJobCommands(CLI::App* iot, IotJobCommands* commands);

// ReadSerialsFile reads a serials file: one hexadecimal serial per line (1 to 42 digits, upper or lower case,
// surrounding blanks ignored), blank lines and lines starting with '#' skipped, repeats kept once. Returned upper
// case without leading zero octets. InvalidArgument naming FILE:LINE for a line that is not a serial, a line
// longer than kMaxSerialLineBytes, a file over kMaxSerialsFileBytes or with more than kMaxJobSerials serials, or
// none at all; NotFound / PermissionDenied when it cannot be read.
absl::StatusOr<std::vector<std::string>> ReadSerialsFile(const std::string& path);

// RunIotJobCommands runs whichever of them was given; returns the exit code.
int RunIotJobCommands(const IotJobCommands& commands, const std::shared_ptr<grpc::Channel>& channel);

}  // namespace linesign::client

#endif  // LINESIGN_CLIENT_IOT_JOB_COMMANDS_H_
