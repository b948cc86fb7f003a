#include "server/iot/operation_stats.h"

#include <map>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace linesign::iot {
namespace {

// Label returns the value of label `name` in `labels` (the text between the braces), or "" when absent. Values
// with escapes are not unescaped: target and operation names have none.
std::string Label(absl::string_view labels, absl::string_view name) {
  for (absl::string_view part : absl::StrSplit(labels, ',')) {
    absl::string_view value = part;
    if (absl::ConsumePrefix(&value, name) && absl::ConsumePrefix(&value, "=\"") && absl::ConsumeSuffix(&value, "\"")) {
      return std::string(value);
    }
  }
  return "";
}

}  // namespace

std::vector<OperationStats> OperationStatsFromMetrics(absl::string_view exposition, absl::string_view target) {
  std::map<std::string, OperationStats> ops;
  for (absl::string_view line : absl::StrSplit(exposition, '\n', absl::SkipEmpty())) {
    if (absl::StartsWith(line, "#")) continue;
    const size_t open = line.find('{'), close = line.rfind('}');
    if (open == absl::string_view::npos || close == absl::string_view::npos || close < open) continue;
    absl::string_view name = line.substr(0, open), labels = line.substr(open + 1, close - open - 1);
    if (name != "linesign_iot_rate_per_second" && name != "linesign_iot_calls_total" &&
        name != "linesign_iot_throttles_total") {
      continue;
    }
    if (Label(labels, "target") != target) continue;
    const std::string op = Label(labels, "operation");
    double value = 0;
    if (op.empty() || !absl::SimpleAtod(absl::StripAsciiWhitespace(line.substr(close + 1)), &value)) continue;
    OperationStats& s = ops[op];
    s.operation = op;
    if (name == "linesign_iot_rate_per_second") {
      s.rate_per_second = value;
    } else if (name == "linesign_iot_calls_total") {
      s.calls += static_cast<int64_t>(value);  // one line per outcome
    } else {
      s.throttles = static_cast<int64_t>(value);
    }
  }
  std::vector<OperationStats> out;
  for (auto& [op, s] : ops) out.push_back(std::move(s));
  return out;
}

}  // namespace linesign::iot
