// FakeIot: tests/fake_iot/fake_iot.py (a fake AWS IoT control plane that verifies SigV4) run as a child process
// on a loopback port, for the AWS IoT client and registrar tests.
#ifndef LINESIGN_TESTS_TESTING_FAKE_IOT_H_
#define LINESIGN_TESTS_TESTING_FAKE_IOT_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace linesign::testing {

class FakeIot {
 public:
  // Start runs the fake with credentials `access_key` / `secret_key` (and `session_token` when not empty),
  // region us-east-1, plus `extra_args` (e.g. {"--rates", "DescribeCertificate=0.001:1"}, {"--fault-5xx", "1"})
  // and waits up to 60 s for its port. The status carries the fake's output on failure.
  static absl::StatusOr<std::unique_ptr<FakeIot>> Start(const std::string& access_key, const std::string& secret_key,
                                                        const std::string& session_token,
                                                        const std::vector<std::string>& extra_args = {});
  ~FakeIot();  // SIGTERM, then waits

  int port() const { return port_; }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // Calls returns the fake's call log (GET /__fake/calls); State its registry (GET /__fake/state).
  nlohmann::json Calls() const;
  nlohmann::json State() const;

 private:
  FakeIot() = default;
  nlohmann::json Get(const std::string& path) const;
  pid_t pid_ = -1;
  int port_ = 0;
  std::string dir_;
};

}  // namespace linesign::testing

#endif  // LINESIGN_TESTS_TESTING_FAKE_IOT_H_
