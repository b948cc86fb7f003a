#include "server/store/store.h"

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/store/postgres/postgres_store.h"
#include "server/store/sqlite/sqlite_store.h"

namespace linesign::store {

namespace {
// The payload that marks an error after which a batch may have been recorded (never shown to a caller).
constexpr char kOutcomeUnknownPayload[] = "linesign.store/outcome-unknown";
}  // namespace

absl::Status OutcomeUnknown(absl::Status st) {
  if (!st.ok()) st.SetPayload(kOutcomeUnknownPayload, absl::Cord("1"));
  return st;
}

bool IsOutcomeUnknown(const absl::Status& st) {
  return !st.ok() && st.GetPayload(kOutcomeUnknownPayload).has_value();
}

const char* StatusName(CertificateStatus status) {
  switch (status) {
    case CertificateStatus::kValid:
      return "valid";
    case CertificateStatus::kRevoked:
      return "revoked";
    case CertificateStatus::kSuperseded:
      return "superseded";
  }
  return "valid";
}

const char* EffectiveStatus(const CertificateRecord& r, int64_t now, int64_t renew_before_seconds) {
  if (r.status != CertificateStatus::kValid) return StatusName(r.status);
  if (r.not_after <= now) return "expired";
  if (r.not_after - renew_before_seconds <= now) return "renewal_due";
  return "valid";
}

const char* ListStatusName(ListStatus status) {
  switch (status) {
    case ListStatus::kValid:
      return "valid";
    case ListStatus::kRenewalDue:
      return "renewal_due";
    case ListStatus::kExpired:
      return "expired";
    case ListStatus::kSuperseded:
      return "superseded";
    case ListStatus::kRevoked:
      return "revoked";
  }
  return "valid";
}

std::optional<ListStatus> ParseListStatus(const std::string& name) {
  for (ListStatus s : {ListStatus::kValid, ListStatus::kRenewalDue, ListStatus::kExpired, ListStatus::kSuperseded,
                       ListStatus::kRevoked}) {
    if (name == ListStatusName(s)) return s;
  }
  return std::nullopt;
}

std::string IotRegisterPayload(const IotRegistrationKey& key) {
  // The fields are hex and target names (checked at start-up); replace keeps dump from throwing regardless.
  return nlohmann::json{{"issuer_id", key.issuer_id}, {"serial", key.serial_hex}, {"target", key.target}}.dump(
      -1, ' ', false, nlohmann::json::error_handler_t::replace);
}

absl::StatusOr<IotRegistrationKey> ParseIotRegisterPayload(absl::string_view payload) {
  nlohmann::json j = nlohmann::json::parse(payload, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || j.size() != 3 || !j.contains("issuer_id") || !j["issuer_id"].is_string() ||
      !j.contains("serial") || !j["serial"].is_string() || !j.contains("target") || !j["target"].is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("store: an ", kIotRegisterOutboxKind, " item's payload is not what IotRegisterPayload writes"));
  }
  IotRegistrationKey key{j["issuer_id"].get<std::string>(), j["serial"].get<std::string>(),
                         j["target"].get<std::string>()};
  if (key.issuer_id.empty() || key.serial_hex.empty() || key.target.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("store: an ", kIotRegisterOutboxKind, " item needs an issuer, a serial and a target"));
  }
  return key;
}

OutboxItem IotRegisterItem(const IotRegistrationKey& key, absl::Time due) {
  return OutboxItem{.kind = kIotRegisterOutboxKind, .payload = IotRegisterPayload(key), .next_attempt_at = due};
}

const char* IotRegistrationStateName(IotRegistrationState state) {
  switch (state) {
    case IotRegistrationState::kPending:
      return "pending";
    case IotRegistrationState::kRegistered:
      return "registered";
    case IotRegistrationState::kFailed:
      return "failed";
  }
  return "pending";
}

absl::StatusOr<std::unique_ptr<Store>> Open(const v1::StoreConfig& config, const Clock* clock) {
  switch (config.backend_case()) {
    case v1::StoreConfig::kSqlite: {
      auto store = SqliteStore::Open(config.sqlite().path(), clock);
      if (!store.ok()) return store.status();
      return std::unique_ptr<Store>(*std::move(store));
    }
    case v1::StoreConfig::kPostgres: {
      auto store = PostgresStore::Open(config.postgres(), clock);
      if (!store.ok()) return store.status();
      return std::unique_ptr<Store>(*std::move(store));
    }
    case v1::StoreConfig::BACKEND_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("store: no backend configured (store.sqlite or store.postgres)");
}

}  // namespace linesign::store
