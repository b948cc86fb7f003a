#include "server/store/store.h"

#include "server/store/postgres/postgres_store.h"
#include "server/store/sqlite/sqlite_store.h"

namespace linesign::store {

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
