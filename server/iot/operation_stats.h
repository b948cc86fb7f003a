// OperationStats: what `linesign iot status` shows of one AWS IoT operation of one target — its configured
// ceiling, its current adaptive rate (adaptive_rate.h), the calls made and the throttles met.
#ifndef LINESIGN_SERVER_IOT_OPERATION_STATS_H_
#define LINESIGN_SERVER_IOT_OPERATION_STATS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace linesign::iot {

struct OperationStats {
  std::string operation;  // AWS IoT operation name, e.g. RegisterCertificate
  double ceiling_per_second = 0;
  double rate_per_second = 0;
  int64_t calls = 0;
  int64_t throttles = 0;
};

// OperationStatsFromMetrics reads `target`'s operations from the metrics text exposition the registrar feeds
// (linesign_iot_rate_per_second, linesign_iot_calls_total, linesign_iot_throttles_total, labelled target and
// operation), ordered by operation; operations with none of them are absent. Lines of other metrics and targets
// are ignored, as is anything it cannot read.
std::vector<OperationStats> OperationStatsFromMetrics(absl::string_view exposition, absl::string_view target);

}  // namespace linesign::iot

#endif  // LINESIGN_SERVER_IOT_OPERATION_STATS_H_
