// The event log: what happened to certificates, appended in the same transaction as the change it describes and
// read back in order by a cursor (watch streams, webhooks).
#ifndef LINESIGN_SERVER_STORE_EVENT_LOG_H_
#define LINESIGN_SERVER_STORE_EVENT_LOG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace linesign::store {

// Event types.
// kEventIssued is implied by every recorded certificate: a store records it with the certificate row itself
// (its time is the certificate's issued_at, to the second), so callers never append one; a batch holding an
// ISSUED event is refused.
inline constexpr char kEventIssued[] = "ISSUED";
// Lifecycle (issue 11): a certificate entered its renewal window (once per certificate); a successor with the
// same key (RENEWED) or a new key (REKEYED) was issued, the event naming the successor and its data
// {"renews":"<predecessor serial>"}.
inline constexpr char kEventRenewalDue[] = "RENEWAL_DUE";
inline constexpr char kEventRenewed[] = "RENEWED";
inline constexpr char kEventRekeyed[] = "REKEYED";
// AWS IoT (issue 10): a certificate was registered with a target (ACTIVE, attached to its thing and policy), or
// its registration stopped on a permanent error; data {"target","certificate_id","certificate_arn"} or
// {"target","certificate_id","error_code","error_message"}. One per registration that ends.
inline constexpr char kEventIotRegistered[] = "IOT_REGISTERED";
inline constexpr char kEventIotFailed[] = "IOT_FAILED";

// Event is one entry of the log.
struct Event {
  int64_t id = 0;          // assigned by the store on append (ignored on write): increasing, the cursor
  std::string type;        // kEventIssued, ...
  std::string issuer_id;   // the certificate it is about, when there is one
  std::string serial_hex;
  std::string station;
  std::string profile;
  absl::Time time = absl::UnixEpoch();  // when it happened (microsecond precision)
  std::string data;        // details, opaque to the store (JSON by convention)
};

// EventReader reads the log.
class EventReader {
 public:
  virtual ~EventReader() = default;
  // ReadAfter returns up to `limit` (1 to 1000) events with id > `cursor`, ascending; start with cursor 0 and pass
  // the last id read. Each recorded certificate is an ISSUED event, so certificates and appended events share
  // one id sequence. Events are appended only by committed batches, and with one writer at a time the ids
  // become visible in order, so a reader never sees an id appear below its cursor. InvalidArgument for a limit
  // out of range.
  virtual absl::StatusOr<std::vector<Event>> ReadAfter(int64_t cursor, int limit) = 0;
};

}  // namespace linesign::store

#endif  // LINESIGN_SERVER_STORE_EVENT_LOG_H_
