#include "server/auth/access_policy.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace linesign::auth {

absl::StatusOr<std::unique_ptr<AccessPolicy>> AccessPolicy::Create(
    const google::protobuf::RepeatedPtrField<v1::AccessRule>& rules) {
  std::unique_ptr<AccessPolicy> p(new AccessPolicy());
  for (int i = 0; i < rules.size(); ++i) {
    Rule rule;
    rule.config = rules[i];
    if (!rule.config.identity_pattern().empty()) {
      rule.pattern = std::make_unique<RE2>(rule.config.identity_pattern(), RE2::Quiet);
      if (!rule.pattern->ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("access[", i, "].identity_pattern: ", rule.pattern->error()));
      }
    } else {
      p->exact_.emplace(rule.config.identity(), p->rules_.size());  // the first rule for an identity wins
    }
    p->rules_.push_back(std::move(rule));
  }
  return p;
}

const AccessPolicy::Rule* AccessPolicy::Find(const std::string& identity) const {
  if (auto it = exact_.find(identity); it != exact_.end()) return &rules_[it->second];
  for (const Rule& r : rules_) {
    if (r.pattern != nullptr && RE2::FullMatch(identity, *r.pattern)) return &r;
  }
  return nullptr;
}

namespace {
absl::Status NoRule(const std::string& identity, absl::string_view rpc) {
  return absl::PermissionDeniedError(
      absl::StrCat("identity '", identity, "' may not call ", rpc, ": no access rule matches it"));
}
}  // namespace

absl::Status AccessPolicy::AllowSign(const std::string& identity, const std::string& profile, absl::Time now) {
  const Rule* rule = Find(identity);
  if (rule == nullptr) return NoRule(identity, "SignCsr");
  const auto& allowed = rule->config.profiles();
  if (std::find(allowed.begin(), allowed.end(), profile) == allowed.end()) {
    return absl::PermissionDeniedError(absl::StrCat(
        "station '", identity, "' may not use profile '", profile, "' (allowed: ",
        allowed.empty() ? "none" : absl::StrJoin(allowed, ", "), ")"));
  }
  const double rate = rule->config.rate_per_second();
  if (rate <= 0) return absl::OkStatus();
  const double burst = rule->config.burst() > 0 ? rule->config.burst() : std::max(1.0, rate);
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, fresh] = buckets_.try_emplace(identity);
  Bucket& b = it->second;
  if (fresh) {
    b.tokens = burst;
  } else {
    b.tokens = std::min(burst, b.tokens + absl::ToDoubleSeconds(now - b.last) * rate);
  }
  b.last = now;
  if (b.tokens < 1.0) {
    return absl::ResourceExhaustedError(absl::StrCat("station '", identity, "' exceeded its rate limit of ", rate,
                                                     " requests/s (burst ", burst, "); retry later"));
  }
  b.tokens -= 1.0;
  return absl::OkStatus();
}

absl::Status AccessPolicy::AllowAdmin(const std::string& identity, absl::string_view rpc) const {
  const Rule* rule = Find(identity);
  if (rule == nullptr) return NoRule(identity, rpc);
  if (!rule->config.admin()) {
    return absl::PermissionDeniedError(
        absl::StrCat("identity '", identity, "' may not call ", rpc, ": administrators only (admin: true)"));
  }
  return absl::OkStatus();
}

absl::Status AccessPolicy::AllowRead(const std::string& identity, absl::string_view rpc) const {
  return Find(identity) == nullptr ? NoRule(identity, rpc) : absl::OkStatus();
}

}  // namespace linesign::auth
