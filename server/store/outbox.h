// The outbox: side effects (AWS IoT registration, webhooks) recorded in the same transaction as the state that
// causes them, then claimed by a runner under a lease, and completed or rescheduled (DESIGN invariant 6).
#ifndef LINESIGN_SERVER_STORE_OUTBOX_H_
#define LINESIGN_SERVER_STORE_OUTBOX_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace linesign::store {

// OutboxItem is one side effect to carry out.
struct OutboxItem {
  int64_t id = 0;           // assigned by the store on enqueue (ignored on write)
  std::string kind;         // what to do, e.g. "iot.register" (iot_registration_store.h); required
  std::string dedupe_key;   // optional: a second item with the same (kind, dedupe_key) is not enqueued
  std::string payload;      // opaque to the store
  absl::Time next_attempt_at = absl::UnixEpoch();  // not claimed before this (microsecond precision)
  // Kept by the store (ignored on write):
  int attempts = 0;         // claims so far
  std::string last_error;   // from the last Reschedule
  std::string lease_owner;  // who holds it, empty when nobody does
  absl::Time lease_until = absl::UnixEpoch();
};

// ClaimRequest says which due items a runner takes and for how long.
struct ClaimRequest {
  std::string kind;  // only items of this kind; empty for every kind
  absl::Time now;    // items with next_attempt_at <= now whose lease is free or expired (lease_until <= now)
  absl::Duration lease = absl::Minutes(1);  // the claimed items are the owner's until now + lease
  int limit = 16;    // 1 to 1000
  std::string owner; // names the runner (replica and thread); required
};

// Outbox: every method is one transaction. Several runners (threads, processes, replicas) may claim at once: an
// item is held by one owner at a time, and after its lease expires unfinished it is due again (at least once:
// runners make their side effects idempotent).
class Outbox {
 public:
  virtual ~Outbox() = default;
  // Enqueue records standalone items (not tied to a certificate) and returns their ids (0 for an item skipped as
  // a duplicate of its (kind, dedupe_key)). Items caused by a certificate go into its BatchEntry instead.
  virtual absl::StatusOr<std::vector<int64_t>> Enqueue(absl::Span<const OutboxItem> items) = 0;
  // Claim leases up to request.limit due items to request.owner, oldest due first, and counts an attempt for
  // each. InvalidArgument for a missing owner, a limit out of range or a lease that is not positive.
  virtual absl::StatusOr<std::vector<OutboxItem>> Claim(const ClaimRequest& request) = 0;
  // Complete marks item `id` done at `now`; it is never claimed again. FailedPrecondition when `owner` does not
  // hold it (its lease expired and another runner claimed it, or it is already complete), NotFound for no item.
  virtual absl::Status Complete(int64_t id, const std::string& owner, absl::Time now) = 0;
  // Reschedule releases item `id` to be due again at `next_attempt_at`, remembering `last_error`. The same
  // FailedPrecondition / NotFound as Complete.
  virtual absl::Status Reschedule(int64_t id, const std::string& owner, absl::Time next_attempt_at,
                                  const std::string& last_error) = 0;
};

}  // namespace linesign::store

#endif  // LINESIGN_SERVER_STORE_OUTBOX_H_
