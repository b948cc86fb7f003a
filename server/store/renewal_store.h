// RenewalStore: what the renewal scanner needs from the store (issue 11): find the certificates that became due
// and mark them, each exactly once, with their RENEWAL_DUE event and (managed renewal) the outbox item that a
// renewer claims under a lease. The successor itself is recorded through IssuanceStore::RecordBatch, which
// supersedes the predecessor in the same transaction (CertificateRecord::renews_serial).
#ifndef LINESIGN_SERVER_STORE_RENEWAL_STORE_H_
#define LINESIGN_SERVER_STORE_RENEWAL_STORE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "server/store/certificate_store.h"
#include "server/store/event_log.h"
#include "server/store/outbox.h"

namespace linesign::store {

// DueQuery selects the certificates of one profile that are due and not yet marked.
struct DueQuery {
  std::string profile;
  int64_t live_after = 0;   // not_after > this (Unix seconds): an expired certificate is not renewed by the scan
  int64_t due_before = 0;   // not_after <= this: now + the profile's renew_before
  int limit = 100;          // 1 to 1000
};

// DueMark marks one certificate due.
struct DueMark {
  std::string issuer_id;
  std::string serial_hex;
  Event event;                       // RENEWAL_DUE, appended only when this call marks the certificate
  std::optional<OutboxItem> outbox;  // the managed renewal's work item, likewise
};

class RenewalStore {
 public:
  virtual ~RenewalStore() = default;
  // FindRenewalPending returns up to query.limit certificates of query.profile that are valid, have no successor
  // and no renewal_due_at mark, with live_after < not_after <= due_before, soonest expiry first. It walks an
  // index holding only unmarked valid certificates, so certificates already marked cost nothing.
  // InvalidArgument for a limit out of range.
  virtual absl::StatusOr<std::vector<CertificateRecord>> FindRenewalPending(const DueQuery& query) = 0;
  // MarkRenewalDue marks, in ONE transaction, each certificate of `marks` that is still valid, without successor
  // and unmarked: sets renewal_due_at to `now` and records its event and outbox item. A certificate another
  // process marked first (or that was renewed or revoked meanwhile) is skipped with its event and item, so every
  // certificate gets at most one RENEWAL_DUE. Returns how many were marked. Unavailable when the transaction fails
  // (nothing written).
  virtual absl::StatusOr<int> MarkRenewalDue(absl::Span<const DueMark> marks, absl::Time now) = 0;
};

}  // namespace linesign::store

#endif  // LINESIGN_SERVER_STORE_RENEWAL_STORE_H_
