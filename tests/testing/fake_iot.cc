#include "tests/testing/fake_iot.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/openssl_util.h"
#include "server/iot/http_transport.h"

namespace linesign::testing {

absl::StatusOr<std::unique_ptr<FakeIot>> FakeIot::Start(const std::string& access_key, const std::string& secret_key,
                                                        const std::string& session_token,
                                                        const std::vector<std::string>& extra_args) {
  std::unique_ptr<FakeIot> fake(new FakeIot());
  const char* tmp = getenv("TMPDIR");
  std::string templ = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/fake-iot-XXXXXX");
  if (mkdtemp(templ.data()) == nullptr) return absl::InternalError("mkdtemp failed");
  fake->dir_ = templ;
  const std::string port_file = fake->dir_ + "/port", log_file = fake->dir_ + "/fake.log";
  std::vector<std::string> argv = {"/usr/bin/python3", LINESIGN_FAKE_IOT_PY, "--port-file", port_file,
                                   "--access-key", access_key, "--secret-key", secret_key,
                                   "--region", "us-east-1"};
  if (!session_token.empty()) {
    argv.push_back("--session-token");
    argv.push_back(session_token);
  }
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  fake->pid_ = fork();
  if (fake->pid_ == 0) {
    int fd = open(log_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 1);
    dup2(fd, 2);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    absl::StatusOr<std::string> port = ReadFile(port_file);
    if (port.ok() && absl::SimpleAtoi(*port, &fake->port_)) return fake;
    int status;
    if (waitpid(fake->pid_, &status, WNOHANG) == fake->pid_) {
      fake->pid_ = -1;
      return absl::InternalError(absl::StrCat("fake_iot.py exited: ", ReadFile(log_file).value_or("")));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return absl::DeadlineExceededError(absl::StrCat("fake_iot.py did not start: ", ReadFile(log_file).value_or("")));
}

FakeIot::~FakeIot() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    int status;
    waitpid(pid_, &status, 0);
  }
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

nlohmann::json FakeIot::Get(const std::string& path) const {
  auto transport = iot::CurlTransport::Create({.max_connections = 1});
  if (!transport.ok()) return nullptr;
  auto response = (*transport)->Send({.method = "GET", .url = endpoint() + path});
  if (!response.ok() || response->status != 200) return nullptr;
  return nlohmann::json::parse(response->body, nullptr, false);
}

nlohmann::json FakeIot::Calls() const { return Get("/__fake/calls"); }
nlohmann::json FakeIot::State() const { return Get("/__fake/state"); }

}  // namespace linesign::testing
