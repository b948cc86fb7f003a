#include "server/service/grpc_status.h"

#include "common/log.h"

namespace linesign::service {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  switch (status.code()) {
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kDataLoss:
      LogError("internal error returned to a caller: ", status.ToString());
      return grpc::Status(static_cast<grpc::StatusCode>(status.code()), "internal error; see the server log");
    default:
      return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
  }
}

}  // namespace linesign::service
