// OperationStats: what `linesign iot status` shows of one AWS IoT operation of one target — its configured
// ceiling, its current adaptive rate (adaptive_rate.h) and the throttles it met — read from whatever limits the
// calls (the registrar's per-operation limiters).
#ifndef LINESIGN_SERVER_IOT_OPERATION_STATS_H_
#define LINESIGN_SERVER_IOT_OPERATION_STATS_H_

#include <cstdint>
#include <string>

namespace linesign::iot {

struct OperationStats {
  std::string operation;  // AWS IoT operation name, e.g. RegisterCertificate
  double ceiling_per_second = 0;
  double rate_per_second = 0;
  int64_t throttles = 0;
};

}  // namespace linesign::iot

#endif  // LINESIGN_SERVER_IOT_OPERATION_STATS_H_
