#include "server/store/input_checks.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace linesign::store {

absl::Status CheckOutboxItem(const OutboxItem& item) {
  if (item.kind.empty()) return absl::InvalidArgumentError("store: an outbox item needs a kind");
  if (item.kind == kIotRegisterOutboxKind) return ParseIotRegisterPayload(item.payload).status();
  return absl::OkStatus();
}

absl::Status CheckEvent(const Event& e) {
  if (e.type.empty()) return absl::InvalidArgumentError("store: an event needs a type");
  if (e.type == kEventIssued) {
    return absl::InvalidArgumentError("store: ISSUED events are recorded with their certificate, not appended");
  }
  return absl::OkStatus();
}

absl::Status CheckBatch(const Batch& batch) {
  for (const auto& e : batch.entries) {
    for (const auto& ev : e.events) LINESIGN_RETURN_IF_ERROR(CheckEvent(ev));
    for (const auto& o : e.outbox) LINESIGN_RETURN_IF_ERROR(CheckOutboxItem(o));
  }
  for (const auto& ev : batch.events) LINESIGN_RETURN_IF_ERROR(CheckEvent(ev));
  for (const auto& o : batch.outbox) LINESIGN_RETURN_IF_ERROR(CheckOutboxItem(o));
  return absl::OkStatus();
}

absl::Status CheckCursorLease(const std::string& name, const std::string& owner, absl::Duration lease) {
  if (name.empty()) return absl::InvalidArgumentError("store: a delivery cursor needs a name");
  if (owner.empty()) return absl::InvalidArgumentError("store: a delivery cursor lease needs an owner");
  if (lease <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("store: cursor lease ", absl::FormatDuration(lease), " is not positive"));
  }
  return absl::OkStatus();
}

absl::Status CheckIotWrite(const IotRegistrationWrite& w) {
  if (w.owner.empty()) return absl::InvalidArgumentError("store: an AWS IoT registration write needs the lease owner");
  const IotRegistrationKey& k = w.registration.key;
  if (k.issuer_id.empty() || k.serial_hex.empty() || k.target.empty()) {
    return absl::InvalidArgumentError("store: an AWS IoT registration needs an issuer, a serial and a target");
  }
  return absl::OkStatus();
}

}  // namespace linesign::store
