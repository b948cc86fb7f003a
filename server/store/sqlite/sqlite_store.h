// SqliteStore: the embedded store. One database file in WAL mode with synchronous=FULL, so a committed batch
// survives power loss; writes are serialised by one connection with its statements prepared once, and reads use
// a second one, so a query (a replay look-up, GetCertificate, GetStats, a list, the event log) never waits behind
// a batch that is waiting for the database. Checkpoints (copying the WAL into the database file, with its own
// fsync) run on a connection of their own when the server's checkpoint task calls Checkpoint and the WAL holds
// kCheckpointPages pages, instead of inside whichever commit crossed the threshold, so no batch waits for one.
// The schema is brought up to date at Open (migrations.h).
#ifndef LINESIGN_SERVER_STORE_SQLITE_SQLITE_STORE_H_
#define LINESIGN_SERVER_STORE_SQLITE_SQLITE_STORE_H_

#include <sqlite3.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "common/clock.h"
#include "server/store/store.h"

namespace linesign::store {

class SqliteStore final : public Store {
 public:
  // Open opens (creating when missing) the database at `path` and migrates its schema; `clock` (borrowed, must
  // outlive the store) dates the migrations. Unavailable with the path and SQLite's reason when the file cannot
  // be opened or written; FailedPrecondition naming both versions for a database newer than this binary.
  static absl::StatusOr<std::unique_ptr<SqliteStore>> Open(const std::string& path,
                                                           const Clock* clock = RealClock::Get());
  ~SqliteStore() override;

  absl::StatusOr<std::vector<RecordOutcome>> RecordBatch(const Batch& batch) override;
  absl::StatusOr<std::optional<CertificateRecord>> FindByRequest(const std::string& station,
                                                                 const std::string& request_id) override;
  absl::StatusOr<std::optional<CertificateRecord>> FindBySerial(const std::string& issuer_id,
                                                                const std::string& serial_hex) override;
  absl::StatusOr<CertificatePage> List(const CertificateQuery& query) override;
  absl::StatusOr<int64_t> Count() override;
  absl::StatusOr<std::vector<Event>> ReadAfter(int64_t cursor, int limit) override;
  absl::StatusOr<std::vector<int64_t>> Enqueue(absl::Span<const OutboxItem> items) override;
  absl::StatusOr<std::vector<OutboxItem>> Claim(const ClaimRequest& request) override;
  absl::Status Complete(int64_t id, const std::string& owner, absl::Time now) override;
  absl::Status Reschedule(int64_t id, const std::string& owner, absl::Time next_attempt_at,
                          const std::string& last_error) override;
  absl::StatusOr<std::vector<CertificateRecord>> FindRenewalPending(const DueQuery& query) override;
  absl::StatusOr<int> MarkRenewalDue(absl::Span<const DueMark> marks, absl::Time now) override;

  // ExplainList returns SQLite's query plan for the statement List runs for `query` (EXPLAIN QUERY PLAN, one
  // line per step), so tests can prove each filter walks an index. InvalidArgument as List.
  absl::StatusOr<std::string> ExplainList(const CertificateQuery& query);
  // ExplainRenewalPending likewise for FindRenewalPending.
  absl::StatusOr<std::string> ExplainRenewalPending();

  // RevocationStore (revocation_store.h).
  absl::StatusOr<RevokeResult> Revoke(const RevokeRequest& request) override;
  absl::StatusOr<CrlSnapshot> BeginCrl(const std::string& issuer_id) override;
  absl::StatusOr<bool> SaveCrl(const std::string& issuer_id, const StoredCrl& crl) override;
  absl::StatusOr<CrlState> GetCrlState(const std::string& issuer_id) override;
  absl::StatusOr<std::optional<StoredCrl>> LatestCrl(const std::string& issuer_id) override;

  // CursorStore (cursor_store.h): each call one short transaction on the writer connection.
  absl::StatusOr<std::optional<int64_t>> TakeCursor(const std::string& name, const std::string& owner,
                                                    absl::Time now, absl::Duration lease) override;
  absl::Status AdvanceCursor(const std::string& name, const std::string& owner, int64_t cursor, absl::Time now,
                             absl::Duration lease) override;
  absl::Status ReleaseCursor(const std::string& name, const std::string& owner) override;
  // IotRegistrationStore (iot_registration_store.h): writes on the writer connection, one transaction each;
  // GetIotRegistration on the read connection, lists and counts on the scan connection.
  absl::StatusOr<std::optional<IotRegistration>> GetIotRegistration(const IotRegistrationKey& key) override;
  absl::StatusOr<std::vector<IotRegistration>> ListIotRegistrations(const IotRegistrationQuery& query) override;
  absl::StatusOr<std::vector<IotTargetCounts>> CountIotRegistrations() override;
  absl::StatusOr<IotEnqueueResult> EnqueueIotRegistrations(const std::string& issuer_id, const std::string& target,
                                                           absl::Span<const std::string> serials,
                                                           absl::Time now) override;
  absl::Status SaveIotProgress(const IotRegistrationWrite& write, absl::Duration lease) override;
  absl::Status FinishIotRegistration(const IotRegistrationWrite& write, const Event& event) override;
  absl::Status RetryIotRegistration(const IotRegistrationWrite& write, absl::Time next_attempt_at) override;

  // Checkpoint copies the WAL into the database file (PASSIVE: it waits for neither the writer nor the readers;
  // what it cannot copy now the next call copies) once the last commit left kCheckpointPages pages or more in the
  // WAL, and does nothing below that. Unavailable with SQLite's reason when the checkpoint fails.
  absl::Status Checkpoint() override;
  // Ping takes the write lock and gives it back at once (BEGIN IMMEDIATE; ROLLBACK) on a connection of its own,
  // waiting at most kPingBusyTimeout: Unavailable ("store: ping: database is locked") when another connection or
  // process holds the database longer than that, or the file cannot be written.
  absl::Status Ping() override;
  // Stats runs on the administrative scan connection: the expiry counts walk the not_after index, the backlog the
  // outbox's unfinished rows.
  absl::StatusOr<StoreStats> Stats(absl::Time now, const std::vector<absl::Duration>& expiry_bounds) override;

  // checkpoints returns how many checkpoints Checkpoint has completed.
  int64_t checkpoints() const;

  static constexpr int kCheckpointPages = 1000;  // SQLite's own default threshold
  static constexpr int kBusyTimeoutMs = 5000;    // how long a batch waits for the write lock
  static constexpr int kPingBusyTimeoutMs = 1000;

 private:
  SqliteStore(sqlite3* db, const Clock* clock) : db_(db), clock_(clock) {}
  absl::Status Exec(const char* sql);
  absl::Status Prepare();
  absl::StatusOr<std::optional<CertificateRecord>> FindOne(const char* where, const std::string& a,
                                                           const std::string& b);
  // InsertEvent / InsertOutbox write one row inside the open transaction; InsertOutbox returns the new id, or 0
  // when (kind, dedupe_key) is already there.
  absl::Status InsertEvent(const Event& event);
  // ListSql builds List's statement for `query` and binds it on the scan connection (scan_mu_ held).
  struct ListPlan;
  absl::StatusOr<ListPlan> PrepareList(const CertificateQuery& query);
  // Profiles returns, in order, the distinct profiles of the certificates in certificates_renewal_marked
  // (`marked`) or certificates_renewal_pending. Callers hold scan_mu_.
  absl::StatusOr<std::vector<std::string>> Profiles(bool marked);
  absl::StatusOr<int64_t> InsertOutbox(const OutboxItem& item);
  // ReleaseLease runs `update` (binding ?1 = id, ?2 = owner after `bind`) and explains a miss.
  absl::Status ReleaseLease(sqlite3_stmt* update, int64_t id, const std::string& owner, absl::string_view what);
  // WriteIotRow updates the registration of `w` inside the open transaction with `state` and `add_attempts`.
  // NotFound when there is no such registration.
  absl::Status WriteIotRow(const IotRegistrationWrite& w, IotRegistrationState state, int add_attempts);

  std::mutex mu_;
  sqlite3* db_;  // owned; guarded by mu_; the writer
  const Clock* clock_;  // borrowed
  // The writer's statements, prepared once at Open; guarded by mu_, finalized before db_ is closed.
  sqlite3_stmt* find_request_ = nullptr;
  sqlite3_stmt* insert_certificate_ = nullptr;
  sqlite3_stmt* insert_event_ = nullptr;
  sqlite3_stmt* insert_outbox_ = nullptr;
  sqlite3_stmt* claim_ = nullptr;
  sqlite3_stmt* complete_ = nullptr;
  sqlite3_stmt* reschedule_ = nullptr;
  sqlite3_stmt* supersede_ = nullptr;
  sqlite3_stmt* mark_due_ = nullptr;
  sqlite3_stmt* upsert_iot_pending_ = nullptr;
  std::mutex read_mu_;
  sqlite3* reader_ = nullptr;  // owned; guarded by read_mu_; read-only, sees every committed batch (WAL)
  // Administrative scans (List, Count) run on a read-only connection of their own, so a long listing never holds
  // up the look-ups the issuing path makes (a station's retry answered from the store).
  std::mutex scan_mu_;
  sqlite3* scanner_ = nullptr;  // owned; guarded by scan_mu_

  static int OnWalCommit(void* self, sqlite3* db, const char* name, int pages);
  std::atomic<int> wal_pages_{0};  // the WAL's size in pages after the last commit
  mutable std::mutex ck_mu_;
  sqlite3* ck_ = nullptr;    // owned; guarded by ck_mu_; the checkpointer
  int64_t checkpoints_ = 0;  // guarded by ck_mu_
  std::mutex ping_mu_;
  sqlite3* ping_ = nullptr;  // owned; guarded by ping_mu_
};

}  // namespace linesign::store

#endif  // LINESIGN_SERVER_STORE_SQLITE_SQLITE_STORE_H_
