// ToGrpcStatus: the one place absl::Status becomes grpc::Status at the edge.
#ifndef LINESIGN_SERVER_SERVICE_GRPC_STATUS_H_
#define LINESIGN_SERVER_SERVICE_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace linesign::service {

// ToGrpcStatus keeps the code and message of errors meant for the caller. Internal, Unknown and DataLoss are
// logged in full and replaced by a generic message, so internal detail never reaches a station.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace linesign::service

#endif  // LINESIGN_SERVER_SERVICE_GRPC_STATUS_H_
