#include "tests/testing/health_checks.h"

#include <httplib.h>

#include <chrono>

#include "absl/strings/numbers.h"
#include "gtest/gtest.h"

namespace linesign::testing {

ServingStatus HealthStatus(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  grpc::Status st = grpc::health::v1::Health::NewStub(channel)->Check(&ctx, req, &resp);
  if (!st.ok()) {
    ADD_FAILURE() << "Health.Check: " << st.error_code() << " " << st.error_message();
    return grpc::health::v1::HealthCheckResponse::UNKNOWN;
  }
  return resp.status();
}

int Readyz(const std::string& http_address, std::string* body) {
  const size_t colon = http_address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(http_address.substr(colon + 1), &port)) {
    ADD_FAILURE() << "no port in the HTTP address '" << http_address << "'";
    return 0;
  }
  httplib::Client c(http_address.substr(0, colon), port);
  c.set_read_timeout(30, 0);
  auto r = c.Get("/readyz");
  if (!r) return 0;
  if (body != nullptr) *body = r->body;
  return r->status;
}

bool WaitUntil(const std::function<bool()>& done, absl::Duration patience) {
  const absl::Time deadline = absl::Now() + patience;
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return done();
}

}  // namespace linesign::testing
