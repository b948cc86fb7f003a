// What a load balancer asks a running server: grpc.health.v1 over the station channel and /readyz over HTTP, and
// a bounded wait for an answer to change (a deadline, never a timed assertion).
#ifndef LINESIGN_TESTS_TESTING_HEALTH_CHECKS_H_
#define LINESIGN_TESTS_TESTING_HEALTH_CHECKS_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace linesign::testing {

using ServingStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;

// HealthStatus asks Health.Check (the whole server) on `channel`; UNKNOWN, with a test failure, when the call
// itself fails.
ServingStatus HealthStatus(const std::shared_ptr<grpc::Channel>& channel);

// Readyz GETs /readyz from the HTTP listener at `http_address` (host:port) and returns the HTTP status (0
// without an answer), the body in `body` when given.
int Readyz(const std::string& http_address, std::string* body = nullptr);

// WaitUntil calls `done` every 50 ms until it returns true (true) or `patience` has passed (false).
bool WaitUntil(const std::function<bool()>& done, absl::Duration patience = absl::Seconds(60));

}  // namespace linesign::testing

#endif  // LINESIGN_TESTS_TESTING_HEALTH_CHECKS_H_
