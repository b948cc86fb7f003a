// ServerProcess: the real linesign-server binary run as a child process, for end-to-end and start-up tests.
#ifndef LINESIGN_TESTS_TESTING_SERVER_PROCESS_H_
#define LINESIGN_TESTS_TESTING_SERVER_PROCESS_H_

#include <sys/types.h>

#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace linesign::testing {

struct ExitResult {
  int exit_code = -1;   // -1 when killed by a signal
  std::string output;   // stdout and stderr together
};

// RunCommand runs `argv` to completion (killed after `timeout_s`) and returns its exit code and output.
ExitResult RunCommand(const std::vector<std::string>& argv, int timeout_s = 60);

class ServerProcess {
 public:
  // Start runs linesign-server with `args` and waits (up to 60 s) for its "listening on ADDR" line. On failure
  // the status carries the server's output.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(const std::vector<std::string>& args);
  ~ServerProcess();

  const std::string& address() const { return address_; }
  // http_address is the HTTP listener's host:port ("" when it is off).
  const std::string& http_address() const { return http_address_; }
  pid_t pid() const { return pid_; }
  // Stop sends `signal` and waits for exit; returns the exit code (-1 if it died of a signal).
  ExitResult Stop(int signal = 15);

 private:
  ServerProcess() = default;
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::thread drain_;  // reads the child's output so it never blocks on a full pipe
  std::mutex mu_;
  std::string output_;  // guarded by mu_ once drain_ runs
  std::string address_;
  std::string http_address_;
};

// StillRunning says whether the child `pid` has not exited yet, without reaping it (so ServerProcess::Stop still
// sees its exit code).
bool StillRunning(pid_t pid);

// ChildProcess runs a program (stdout and stderr to `log`) until destroyed, then ends it with SIGTERM and reaps it:
// for the real services a test starts beside the server (Prometheus, HAProxy, nginx, mosquitto).
class ChildProcess {
 public:
  ChildProcess(const std::vector<std::string>& argv, const std::string& log);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  bool started() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

// FreeLoopbackPort returns a loopback TCP port nobody listened on a moment ago (a race only with another process
// binding meanwhile), or -1.
int FreeLoopbackPort();

// WriteConfig writes `yaml` to a new file in `dir` and returns its path.
std::string WriteConfig(const std::string& dir, const std::string& yaml);

}  // namespace linesign::testing

#endif  // LINESIGN_TESTS_TESTING_SERVER_PROCESS_H_
