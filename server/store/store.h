// Store interfaces, one per capability: the issuer sees only IssuanceStore ("record this batch, find a station's
// earlier request"); read-only queries are CertificateReader (certificate_store.h) and EventReader
// (event_log.h); side effects leave through Outbox (outbox.h); revocations and CRLs through RevocationStore
// (revocation_store.h); the renewal scanner marks due certificates through RenewalStore (renewal_store.h); the
// webhook keeps its place in the log through CursorStore (cursor_store.h); the AWS IoT registrar keeps each
// registration's state through IotRegistrationStore (iot_registration_store.h).
// Open picks the backend StoreConfig names:
// sqlite/ (embedded default, one process) or postgres/ (several replicas on one database), both passing the same
// suite (testing/store_conformance.h).
#ifndef LINESIGN_SERVER_STORE_STORE_H_
#define LINESIGN_SERVER_STORE_STORE_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "linesign/v1/config.pb.h"
#include "server/store/certificate_store.h"
#include "server/store/cursor_store.h"
#include "server/store/event_log.h"
#include "server/store/iot_registration_store.h"
#include "server/store/outbox.h"
#include "server/store/revocation_store.h"
#include "server/store/renewal_store.h"

namespace linesign::store {

// BatchEntry is one certificate with what it causes: its events and outbox items are written only if the
// certificate is (its outcome is kRecorded).
struct BatchEntry {
  CertificateRecord cert;
  std::vector<Event> events;
  std::vector<OutboxItem> outbox;
};

// Batch is what one transaction records.
struct Batch {
  std::vector<BatchEntry> entries;
  std::vector<Event> events;        // not tied to a certificate: always written with the batch
  std::vector<OutboxItem> outbox;   // likewise
};

// OutboxBacklog is the unfinished outbox items of one kind.
struct OutboxBacklog {
  std::string kind;
  int64_t pending = 0;
  absl::Time oldest_created = absl::InfiniteFuture();  // when the oldest of them was recorded
};

// StoreStats is what the operator's metrics read from the store now and then (never on the issuing path).
struct StoreStats {
  std::vector<OutboxBacklog> outbox;  // by kind, only kinds with pending items
  // expiring[i]: recorded certificates (any status) with now < notAfter <= now + the i-th bound asked for.
  std::vector<int64_t> expiring;
  int64_t unexpired = -1;  // recorded certificates with notAfter > now; -1: not counted (no expiry bounds asked)
};

// OutcomeUnknown marks `st` (an error of RecordBatch) as one after which the batch may have been recorded: the
// connection was lost while the commit was on its way, so the answer never came. A retry with the same request
// ids finds out (each is either replayed or recorded now). IsOutcomeUnknown tells such an error from one that
// recorded nothing.
absl::Status OutcomeUnknown(absl::Status st);
bool IsOutcomeUnknown(const absl::Status& st);

class IssuanceStore {
 public:
  virtual ~IssuanceStore() = default;

  // RecordBatch writes `batch` in ONE durable transaction (committed and synced before it returns) and returns
  // one outcome per entry; an entry that was not recorded wrote nothing, neither its certificate nor its events
  // nor its outbox items. An entry whose certificate renews another (renews_serial) supersedes it in the same
  // transaction (status superseded, renewed_by_serial set), or is refused kPredecessorNotValid when that one is
  // no longer valid or already has a successor. A failed transaction (disk full, read-only file, lost connection, any failed write) is
  // Unavailable and writes nothing at all.
  virtual absl::StatusOr<std::vector<RecordOutcome>> RecordBatch(const Batch& batch) = 0;

  // FindByRequest returns the record of (station, request_id), or nullopt.
  virtual absl::StatusOr<std::optional<CertificateRecord>> FindByRequest(const std::string& station,
                                                                         const std::string& request_id) = 0;
};

// Store is a whole backend. Components take the narrow interface they need; only the server's wiring holds this.
class Store : public IssuanceStore, public CertificateReader, public EventReader, public Outbox,
              public RevocationStore,
              public RenewalStore, public CursorStore, public IotRegistrationStore {
 public:
  // One FindByRequest for both interfaces that ask for it.
  absl::StatusOr<std::optional<CertificateRecord>> FindByRequest(const std::string& station,
                                                                 const std::string& request_id) override = 0;

  // Ping says whether the backend can take a write now (the health monitor asks every few seconds): Unavailable
  // with the reason when it cannot within a short wait.
  virtual absl::Status Ping() = 0;
  // Checkpoint does the backend's periodic upkeep (SQLite: copy the WAL into the database file once it has
  // grown); the server's "store-checkpoint" task calls it. Unavailable when it fails; OK for nothing to do.
  virtual absl::Status Checkpoint() { return absl::OkStatus(); }
  // Stats counts the outbox backlog by kind and, when `expiry_bounds` (ascending) is not empty, the certificates by
  // time left to expiry at `now`: one count per bound and the unexpired total, from one pass over the unexpired
  // certificates' notAfter index (that pass grows with the store: the metrics task asks for it every few minutes
  // only). With no bounds, `expiring` is empty and `unexpired` is -1. Runs on a read connection; Unimplemented
  // for a backend that does not offer it.
  virtual absl::StatusOr<StoreStats> Stats(absl::Time now, const std::vector<absl::Duration>& expiry_bounds) {
    return absl::UnimplementedError("store: Stats is not offered by this backend");
  }
};

// Open opens the backend `config` names, brings its schema up to date (sqlite/migrations.h, postgres/migrations.h)
// and returns it.
// `clock` is borrowed, must outlive the store and dates the migrations. InvalidArgument when no backend is set;
// the backend's own errors otherwise (a database newer than this binary is FailedPrecondition).
absl::StatusOr<std::unique_ptr<Store>> Open(const v1::StoreConfig& config, const Clock* clock);

}  // namespace linesign::store

#endif  // LINESIGN_SERVER_STORE_STORE_H_
