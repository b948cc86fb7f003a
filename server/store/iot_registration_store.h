// IotRegistrationStore: the state of each certificate's registration with each AWS IoT target (issue 10), kept
// beside the outbox item that drives it. An outbox item of kind kIotRegisterOutboxKind, however it is written
// (BatchEntry.outbox in the certificate's own transaction, Batch.outbox, Outbox::Enqueue), records its
// registration as pending in the same transaction. The registrar, holding the item's lease, saves the step
// progress after every step and finishes (registered or failed, with its event) or retries the item; each of
// those writes is one transaction and is refused unless the writer holds the item's lease.
#ifndef LINESIGN_SERVER_STORE_IOT_REGISTRATION_STORE_H_
#define LINESIGN_SERVER_STORE_IOT_REGISTRATION_STORE_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "server/store/event_log.h"
#include "server/store/outbox.h"

namespace linesign::store {

// The outbox kind of a device certificate's registration with one target; its payload is IotRegisterPayload().
inline constexpr char kIotRegisterOutboxKind[] = "iot.register";

// IotRegistrationKey names one registration: a certificate (issuer, upper-case hex serial) and a target name.
struct IotRegistrationKey {
  std::string issuer_id;
  std::string serial_hex;
  std::string target;
  bool operator==(const IotRegistrationKey& o) const {
    return issuer_id == o.issuer_id && serial_hex == o.serial_hex && target == o.target;
  }
};

// IotRegisterPayload is the payload of the registration's outbox item (JSON {"issuer_id","serial","target"});
// ParseIotRegisterPayload reads it back, InvalidArgument for anything IotRegisterPayload did not write.
std::string IotRegisterPayload(const IotRegistrationKey& key);
absl::StatusOr<IotRegistrationKey> ParseIotRegisterPayload(absl::string_view payload);
// IotRegisterItem is the outbox item that registers `key`, due at `due`.
OutboxItem IotRegisterItem(const IotRegistrationKey& key, absl::Time due);

enum class IotRegistrationState { kPending, kRegistered, kFailed };
const char* IotRegistrationStateName(IotRegistrationState state);  // "pending", "registered", "failed"

// IotRegistration is one registration's stored state.
struct IotRegistration {
  IotRegistrationKey key;
  IotRegistrationState state = IotRegistrationState::kPending;
  std::string progress;         // the step machine's RegistrationProgress JSON; empty before the first step
  std::string certificate_id;   // AWS's id (hex SHA-256 of the DER), once known
  std::string certificate_arn;  // once registered
  std::string thing_name;       // the thing it is (to be) attached to; empty: none
  std::string policy;           // the policy it is (to be) attached to; empty: none
  bool already_present = false;  // AWS had the certificate before linesign's RegisterCertificate
  std::string error_code;       // failed: AWS's error code (or linesign's reason code); pending: the last retry's
  std::string error_message;
  int attempts = 0;             // steps that failed (retried or final)
  absl::Time updated_at = absl::UnixEpoch();
};

// IotRegistrationWrite is what the lease holder of a registration's outbox item writes.
struct IotRegistrationWrite {
  int64_t outbox_id = 0;
  std::string owner;       // must hold the item's lease
  absl::Time now;
  IotRegistration registration;  // key and the fields to store; state, attempts and updated_at are set by the call
};

// IotRegistrationQuery pages through the registrations of one target, by serial.
struct IotRegistrationQuery {
  std::string issuer_id;
  std::string target;
  std::optional<IotRegistrationState> state;  // only these; all when unset
  std::string after_serial;                   // start after this serial (the last one of the previous page)
  int limit = 100;                            // 1 to 1000
};

// IotTargetCounts are one target's registrations by state, and its failures by error code.
struct IotTargetCounts {
  std::string target;
  int64_t pending = 0, registered = 0, failed = 0;
  std::map<std::string, int64_t> failed_by_code;
};

// IotEnqueueResult is what EnqueueIotRegistrations did with the serials it was given.
struct IotEnqueueResult {
  int64_t enqueued = 0;            // new registrations, and failed ones enqueued again
  int64_t already_registered = 0;  // skipped
  int64_t already_pending = 0;     // skipped: an item is on its way
  int64_t unknown_serial = 0;      // no certificate with that serial from that issuer: skipped
};

class IotRegistrationStore {
 public:
  virtual ~IotRegistrationStore() = default;

  // GetIotRegistration returns the registration of (issuer_id, serial_hex, target), or nullopt when there is none.
  // Runs on a read connection.
  virtual absl::StatusOr<std::optional<IotRegistration>> GetIotRegistration(const IotRegistrationKey& key) = 0;

  // ListIotRegistrations returns up to query.limit registrations of query.target (and state), by serial.
  // InvalidArgument for a limit out of range or an empty target.
  virtual absl::StatusOr<std::vector<IotRegistration>> ListIotRegistrations(const IotRegistrationQuery& query) = 0;

  // CountIotRegistrations counts every target's registrations by state, and the failed ones by error code,
  // ordered by target.
  virtual absl::StatusOr<std::vector<IotTargetCounts>> CountIotRegistrations() = 0;

  // EnqueueIotRegistrations enqueues, in ONE transaction, the registration of each certificate of `serials`
  // (issued by `issuer_id`) with `target`, due at `now`: a registered or pending one is skipped, a failed one is
  // enqueued again (how an operator retries after fixing the cause; its progress is kept, so completed steps are
  // not repeated), an unknown serial is counted and skipped. A serial listed twice counts once. InvalidArgument
  // for an empty issuer or target or more than 10000 serials; Unavailable when the transaction fails (nothing
  // written).
  virtual absl::StatusOr<IotEnqueueResult> EnqueueIotRegistrations(const std::string& issuer_id,
                                                                   const std::string& target,
                                                                   absl::Span<const std::string> serials,
                                                                   absl::Time now) = 0;

  // SaveIotProgress stores write.registration's progress, certificate id and ARN, thing, policy and
  // already_present (the state stays pending) and renews the item's lease to now + `lease`, only while
  // write.owner holds the lease of item write.outbox_id: FailedPrecondition when it does not (the lease expired
  // and another runner claimed it, or the item is complete), NotFound for no such item or registration.
  virtual absl::Status SaveIotProgress(const IotRegistrationWrite& write, absl::Duration lease) = 0;

  // FinishIotRegistration completes item write.outbox_id, sets the registration's state to
  // write.registration.state (registered or failed) with its fields (and one more attempt when failed), and
  // appends `event` (IOT_REGISTERED / IOT_FAILED) — in ONE transaction, only while write.owner holds the lease;
  // the same FailedPrecondition / NotFound as SaveIotProgress, InvalidArgument for a pending state.
  virtual absl::Status FinishIotRegistration(const IotRegistrationWrite& write, const Event& event) = 0;

  // RetryIotRegistration reschedules item write.outbox_id to `next_attempt_at` and records the failed attempt on
  // the registration (error code and message, one more attempt; progress as given; still pending), in ONE
  // transaction, only while write.owner holds the lease; the same errors as SaveIotProgress.
  virtual absl::Status RetryIotRegistration(const IotRegistrationWrite& write, absl::Time next_attempt_at) = 0;
};

}  // namespace linesign::store

#endif  // LINESIGN_SERVER_STORE_IOT_REGISTRATION_STORE_H_
