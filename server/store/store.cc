#include "server/store/store.h"

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

absl::StatusOr<std::unique_ptr<Store>> Open(const v1::StoreConfig& config, const Clock* clock) {
  switch (config.backend_case()) {
    case v1::StoreConfig::kSqlite: {
      auto store = SqliteStore::Open(config.sqlite().path(), clock);
      if (!store.ok()) return store.status();
      return std::unique_ptr<Store>(*std::move(store));
    }
    case v1::StoreConfig::BACKEND_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("store: no backend configured (store.sqlite)");
}

}  // namespace linesign::store
