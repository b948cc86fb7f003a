#include "tests/testing/server_process.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/openssl_util.h"
#include "tests/testing/test_ca.h"

namespace linesign::testing {
namespace {

pid_t Spawn(const std::vector<std::string>& argv, int* out_fd) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(fds[1]);
  *out_fd = fds[0];
  return pid;
}

// ReadSome appends what `fd` has within `ms` milliseconds; false at end of file.
bool ReadSome(int fd, std::string* out, int ms) {
  pollfd p = {fd, POLLIN, 0};
  if (poll(&p, 1, ms) <= 0) return true;
  char buf[4096];
  ssize_t n = read(fd, buf, sizeof(buf));
  if (n <= 0) return false;
  out->append(buf, n);
  return true;
}

int Reap(pid_t pid, int timeout_s) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    usleep(10000);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

ExitResult RunCommand(const std::vector<std::string>& argv, int timeout_s) {
  ExitResult r;
  int fd;
  pid_t pid = Spawn(argv, &fd);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (std::chrono::steady_clock::now() < deadline && ReadSome(fd, &r.output, 100)) {
  }
  close(fd);
  r.exit_code = Reap(pid, 5);
  return r;
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(const std::vector<std::string>& args) {
  std::unique_ptr<ServerProcess> p(new ServerProcess());
  std::vector<std::string> argv = {ServerBinary()};
  argv.insert(argv.end(), args.begin(), args.end());
  p->pid_ = Spawn(argv, &p->out_fd_);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  const std::string marker = "linesign-server listening on ";
  while (std::chrono::steady_clock::now() < deadline) {
    size_t at = p->output_.find(marker);
    if (at != std::string::npos) {
      size_t end = p->output_.find('\n', at);
      if (end != std::string::npos) {
        p->address_ = p->output_.substr(at + marker.size(), end - at - marker.size());
        // The HTTP listener's line comes before it (when the listener is on).
        const std::string http_marker = "linesign-server http on ";
        if (size_t h = p->output_.find(http_marker); h != std::string::npos && h < at) {
          size_t h_end = p->output_.find('\n', h);
          p->http_address_ = p->output_.substr(h + http_marker.size(), h_end - h - http_marker.size());
        }
        ServerProcess* raw = p.get();
        raw->drain_ = std::thread([raw] {
          char buf[4096];
          ssize_t n;
          while ((n = read(raw->out_fd_, buf, sizeof(buf))) > 0) {
            std::lock_guard<std::mutex> lock(raw->mu_);
            raw->output_.append(buf, n);
          }
        });
        return p;
      }
    }
    if (!ReadSome(p->out_fd_, &p->output_, 100)) break;
  }
  ExitResult r = p->Stop(SIGKILL);
  return absl::InternalError(absl::StrCat("server did not start (exit ", r.exit_code, "): ", r.output));
}

ExitResult ServerProcess::Stop(int signal) {
  ExitResult r;
  if (pid_ > 0) {
    kill(pid_, signal);
    if (drain_.joinable()) {
      r.exit_code = Reap(pid_, 60);
      drain_.join();  // the pipe ends when the child exits
    } else {
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      while (std::chrono::steady_clock::now() < deadline && ReadSome(out_fd_, &output_, 100)) {
      }
      r.exit_code = Reap(pid_, 5);
    }
    pid_ = -1;
  }
  if (out_fd_ >= 0) close(out_fd_);
  out_fd_ = -1;
  std::lock_guard<std::mutex> lock(mu_);
  r.output = output_;
  return r;
}

ServerProcess::~ServerProcess() { Stop(SIGKILL); }

bool StillRunning(pid_t pid) {
  siginfo_t info = {};
  if (waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0) return false;
  return info.si_pid == 0;  // no state change to report: still running
}

std::string WriteConfig(const std::string& dir, const std::string& yaml) {
  static int n = 0;
  std::string path = absl::StrCat(dir, "/config-", ++n, ".yaml");
  (void)WriteFile(path, yaml, 0600);
  return path;
}

ChildProcess::ChildProcess(const std::vector<std::string>& argv, const std::string& log) {
  pid_ = fork();
  if (pid_ == 0) {
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 1);
    dup2(fd, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
  }
}

int FreeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  int port = -1;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  close(fd);
  return port;
}

}  // namespace linesign::testing
