// Input checks every backend makes before it writes: the same refusals, in the same words, whichever store the
// server runs on (the conformance suite holds both to them).
#ifndef LINESIGN_SERVER_STORE_INPUT_CHECKS_H_
#define LINESIGN_SERVER_STORE_INPUT_CHECKS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/store/store.h"

namespace linesign::store {

// CheckOutboxItem: a kind is required, and an iot.register item's payload must be IotRegisterPayload's.
absl::Status CheckOutboxItem(const OutboxItem& item);
// CheckEvent: a type is required, and ISSUED is never appended (the certificate row is its ISSUED event).
absl::Status CheckEvent(const Event& e);
// CheckBatch runs CheckEvent and CheckOutboxItem on everything `batch` would write.
absl::Status CheckBatch(const Batch& batch);
// CheckCursorLease: a cursor name, an owner and a positive lease.
absl::Status CheckCursorLease(const std::string& name, const std::string& owner, absl::Duration lease);
// CheckIotWrite: an owner and a whole registration key.
absl::Status CheckIotWrite(const IotRegistrationWrite& w);

}  // namespace linesign::store

#endif  // LINESIGN_SERVER_STORE_INPUT_CHECKS_H_
