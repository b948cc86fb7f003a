// PostgresStore: the store for several replicas on one PostgreSQL database (libpq). Same interfaces, same
// semantics as SqliteStore, proven by the same conformance suite (server/store/testing/store_conformance.h).
//
// Connections: the batch writer (RecordBatch, the issuing path) has a connection of its own; every other call
// borrows one from a pool (one per concurrent caller, opened on demand, at most kMaxIdle kept idle). A call whose
// connection fails is Unavailable and drops that connection; the next call opens a new one, so a PostgreSQL
// restart costs the calls made while it is away and nothing after it (no reopening of the store). A connection
// that sat idle is checked before use (the server's goodbye is read without blocking), so the first call after a
// restart does not fail on a connection the server closed meanwhile.
//
// Replicas (issue 13): everything that must happen once holds across processes by the database alone —
//  - serials and request ids: UNIQUE (issuer_id, serial) and UNIQUE (station, request_id). A unique violation
//    would abort the whole transaction, so a certificate is inserted with ON CONFLICT DO NOTHING and, when no row
//    went in, a look-up tells a duplicate request (kDuplicateRequest) from a taken serial (kSerialCollision);
//    the rest of the batch goes on. A successor's supersede runs under a savepoint, undone when it is refused.
//  - the event log: certificates (ISSUED) and events share one id sequence read by cursors (ReadAfter). Ids must
//    become visible in commit order, or a reader that read id 11 never sees an id 10 committed after it. A
//    sequence gives no such order (two transactions take 10 and 11; 11 commits first). So every transaction that
//    allocates log ids first takes the transaction-level advisory lock kLogLockKey (pg_advisory_xact_lock), then
//    allocates max(id) + 1 of both tables, and holds the lock until it commits: PostgreSQL makes a commit
//    visible before it releases the transaction's locks, so the next writer's max sees it and ids appear in
//    order. This serialises the writers of the log (one batch commit at a time across replicas) — the price of
//    an order-preserving cursor. Ids only grow; they may have gaps (a refused entry of a pipelined batch leaves
//    the ids it reserved unused), which a cursor does not mind.
//
// RecordBatch of first issues (the line rate) is pipelined (libpq pipeline mode): all certificates, events and
// outbox items of the batch go out in a few round trips instead of one per row; an entry's events and outbox
// items are written only if its certificate row went in (a condition on the id reserved for it). A batch holding
// a successor (renews_serial) is written row by row with a savepoint per successor.
//  - the outbox: Claim picks due, unleased items with FOR UPDATE SKIP LOCKED and leases them in the same
//    statement; two replicas never get the same item, neither waits for the other.
//  - CRL numbers: one row per issuer in crl_state, incremented by an upsert (the row lock orders allocators and
//    revocations); SaveCrl holds an advisory lock per issuer. Renewal marks: an UPDATE conditioned on the row
//    still being unmarked (re-checked by PostgreSQL after a concurrent update), so each certificate is marked
//    once. Delivery cursors: one conditional upsert.
//
// Checkpoint is PostgreSQL's own business (nothing to do). Backups: pg_dump (docs/operations.md).
#ifndef LINESIGN_SERVER_STORE_POSTGRES_POSTGRES_STORE_H_
#define LINESIGN_SERVER_STORE_POSTGRES_POSTGRES_STORE_H_

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/clock.h"
#include "linesign/v1/config.pb.h"
#include "server/store/postgres/connection.h"
#include "server/store/store.h"

namespace linesign::store {

class PostgresStore final : public Store {
 public:
  // Open connects with `config` (a password from config.password_file when set), migrates the schema and returns
  // the store; `clock` (borrowed, must outlive the store) dates the migrations. Unavailable with libpq's reason
  // when the server cannot be reached or refuses; FailedPrecondition naming both versions for a database newer
  // than this binary; InvalidArgument for a connection string carrying a password or an unreadable password file.
  static absl::StatusOr<std::unique_ptr<PostgresStore>> Open(const v1::PostgresStoreConfig& config,
                                                             const Clock* clock = RealClock::Get());
  ~PostgresStore() override;

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
  absl::StatusOr<RevokeResult> Revoke(const RevokeRequest& request) override;
  absl::StatusOr<CrlSnapshot> BeginCrl(const std::string& issuer_id) override;
  absl::StatusOr<bool> SaveCrl(const std::string& issuer_id, const StoredCrl& crl) override;
  absl::StatusOr<CrlState> GetCrlState(const std::string& issuer_id) override;
  absl::StatusOr<std::optional<StoredCrl>> LatestCrl(const std::string& issuer_id) override;
  absl::StatusOr<std::optional<int64_t>> TakeCursor(const std::string& name, const std::string& owner,
                                                    absl::Time now, absl::Duration lease) override;
  absl::Status AdvanceCursor(const std::string& name, const std::string& owner, int64_t cursor, absl::Time now,
                             absl::Duration lease) override;
  absl::Status ReleaseCursor(const std::string& name, const std::string& owner) override;
  // Ping runs a query on a pooled connection and refuses a server in recovery (a read-only standby):
  // Unavailable with the reason.
  absl::Status Ping() override;
  absl::StatusOr<StoreStats> Stats(absl::Time now, const std::vector<absl::Duration>& expiry_bounds) override;
  // IotRegistrationStore: the iot_registrations table (migration 2), as SQLite's. An iot.register outbox item,
  // however written, upserts its pending registration in the statement that inserts it (only if it went in);
  // FinishIotRegistration appends its event under the log lock, like every other event write.
  absl::StatusOr<std::optional<IotRegistration>> GetIotRegistration(const IotRegistrationKey& key) override;
  absl::StatusOr<std::vector<IotRegistration>> ListIotRegistrations(const IotRegistrationQuery& query) override;
  absl::StatusOr<std::vector<IotTargetCounts>> CountIotRegistrations() override;
  absl::StatusOr<IotEnqueueResult> EnqueueIotRegistrations(const std::string& issuer_id, const std::string& target,
                                                           absl::Span<const std::string> serials,
                                                           absl::Time now) override;
  absl::Status SaveIotProgress(const IotRegistrationWrite& write, absl::Duration lease) override;
  absl::Status FinishIotRegistration(const IotRegistrationWrite& write, const Event& event) override;
  absl::Status RetryIotRegistration(const IotRegistrationWrite& write, absl::Time next_attempt_at) override;

  // kLogLockKey is the advisory lock every writer of the event log holds from allocating ids to its commit.
  static constexpr int64_t kLogLockKey = 0x6c6e7367'6576656e;  // "lnsgeven"
  static constexpr int64_t kCrlLockKey = 0x6c6e7367'63726c73;  // "lnsgcrls": SaveCrl, with the issuer's hash
  // kIotEnqueueLockKey: EnqueueIotRegistrations, with the target's hash, so two enqueues of one target (which
  // read a registration's state and then write its item) do not both enqueue the same certificate.
  static constexpr int64_t kIotEnqueueLockKey = 0x6c6e7367'696f7471;  // "lnsgiotq"
  static constexpr size_t kMaxIdle = 8;

 private:
  using Connection = postgres::Connection;
  PostgresStore(postgres::ConnectSettings settings, const Clock* clock)
      : settings_(std::move(settings)), clock_(clock) {}

  // WithConnection runs `f` on a pooled connection (opened when none is idle) and gives it back when it is still
  // usable. InTransaction likewise inside BEGIN ... COMMIT, rolled back when `f` or the commit fails.
  absl::Status WithConnection(const std::function<absl::Status(Connection&)>& f);
  absl::Status InTransaction(const std::function<absl::Status(Connection&)>& f);
  absl::StatusOr<std::unique_ptr<Connection>> Take();
  void Give(std::unique_ptr<Connection> conn);

  postgres::ConnectSettings settings_;
  const Clock* clock_;  // borrowed
  std::mutex writer_mu_;
  std::unique_ptr<Connection> writer_;  // guarded by writer_mu_; null until needed or after it failed
  std::mutex pool_mu_;
  std::vector<std::unique_ptr<Connection>> idle_;  // guarded by pool_mu_
};

}  // namespace linesign::store

#endif  // LINESIGN_SERVER_STORE_POSTGRES_POSTGRES_STORE_H_
