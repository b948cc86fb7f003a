// CursorStore: a named delivery cursor over the event log, held under a lease (issue 11, the webhook). A follower
// of the log (the webhook sender) keeps in the store how far it has delivered, so a restarted process or another
// one on the same database continues there; the lease lets one process deliver at a time and passes to another
// when its holder stops renewing it.
#ifndef LINESIGN_SERVER_STORE_CURSOR_STORE_H_
#define LINESIGN_SERVER_STORE_CURSOR_STORE_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace linesign::store {

class CursorStore {
 public:
  virtual ~CursorStore() = default;
  // TakeCursor gives `owner` the lease on cursor `name` until now + lease when nobody holds it, its lease expired
  // (lease_until <= now) or `owner` holds it already (a renewal), creating the cursor at 0 the first time, and
  // returns the stored cursor; nullopt when another owner holds an unexpired lease. InvalidArgument for an empty
  // name or owner or a lease that is not positive; Unavailable when the transaction fails.
  virtual absl::StatusOr<std::optional<int64_t>> TakeCursor(const std::string& name, const std::string& owner,
                                                            absl::Time now, absl::Duration lease) = 0;
  // AdvanceCursor stores `cursor` for `name` and renews the lease to now + lease, only while `owner` holds it:
  // FailedPrecondition when it does not (its lease expired and another took it) or when `cursor` is not above
  // the stored one; Unavailable when the write fails.
  virtual absl::Status AdvanceCursor(const std::string& name, const std::string& owner, int64_t cursor,
                                     absl::Time now, absl::Duration lease) = 0;
  // ReleaseCursor ends `owner`'s lease on `name` at once (a stopping server), so another process takes over
  // without waiting for it to expire. Nothing when `owner` does not hold it.
  virtual absl::Status ReleaseCursor(const std::string& name, const std::string& owner) = 0;
};

}  // namespace linesign::store

#endif  // LINESIGN_SERVER_STORE_CURSOR_STORE_H_
