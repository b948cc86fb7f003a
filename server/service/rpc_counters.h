// RpcCounters: the one place that counts and audits a decision. The services call it at their edge: Refused for a
// call (or a stream's request) turned down, Completed for a signing request the signer finished, Answered for a
// plain successful answer. Counts are by RPC and gRPC code; GetStats reads them through Snapshot.
#ifndef LINESIGN_SERVER_SERVICE_RPC_COUNTERS_H_
#define LINESIGN_SERVER_SERVICE_RPC_COUNTERS_H_

#include <grpcpp/support/status.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <string_view>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/clock.h"
#include "server/observability/audit_log.h"
#include "server/store/certificate_store.h"

namespace linesign::service {

// The RPCs, for counting.
enum class Rpc {
  kSignCsr,
  kSignCsrStream,
  kGetCaChain,
  kGetCertificate,
  kGetStats,
  kListCertificates,
  // Revocation (issue 11).
  kRevokeCertificate,
  kGetCrl,
  // Lifecycle (issue 11).
  kRenewCertificate,
  kRekeyCertificate,
  kWatchEvents,
  kRegisterIotCa,  // IotAdministration.RegisterCaCertificate
  kGetIotCaStatus,  // IotAdministration.GetCaStatus
  kSetIotCaStatus,  // IotAdministration.SetCaStatus
  kAwaitIotRegistration,  // IotAdministration.AwaitIotRegistration
  // Bulk registration jobs and status (issue 10).
  kEnqueueIotRegistrations,  // IotAdministration.EnqueueIotRegistrations
  kGetIotRegistrations,      // IotAdministration.GetIotRegistrations
  kGetIotStatus,             // IotAdministration.GetIotStatus
  kCount
};
const char* RpcName(Rpc rpc);

// What a decision is about, for the audit line. Text the caller sent is made valid UTF-8 before it is written.
struct CallInfo {
  std::string identity;    // "" when the caller was not authenticated
  std::string peer;        // gRPC's peer address
  std::string profile;     // once known
  std::string request_id;  // as sent (cut to 128 bytes in the audit)
};

class RpcCounters {
 public:
  // Observer sees every decision the counters count (metrics by code and reason), from the calling thread: quick
  // and thread-safe.
  class Observer {
   public:
    virtual ~Observer() = default;
    // OnDecision: `rpc` answered `code` to `identity` ("" when not authenticated or not known); `outcome` is the
    // audit's ("issued", "replayed", "refused", "failed", "answered"), `why` the refusal or failure (OK otherwise).
    virtual void OnDecision(Rpc rpc, grpc::StatusCode code, std::string_view identity, std::string_view outcome,
                            const absl::Status& why) = 0;
  };

  // `audit`, `clock` and `observer` (optional) are borrowed and must outlive the counters. Thread-safe.
  RpcCounters(audit::AuditLog* audit, const Clock* clock, Observer* observer = nullptr)
      : audit_(audit), clock_(clock), observer_(observer) {}

  // Refused counts and audits a refusal ("refused", with `why`'s message) and returns its gRPC status.
  grpc::Status Refused(Rpc rpc, const CallInfo& call, const absl::Status& why);
  // Completed counts and audits a signing request the signer finished: "issued" or "replayed" with the serial
  // and subject, else "refused" (ALREADY_EXISTS: a request id reused) or "failed" with the reason.
  void Completed(Rpc rpc, const CallInfo& call, const absl::StatusOr<store::CertificateRecord>& record,
                 bool replayed);
  // Revoked counts and audits a successful RevokeCertificate: outcome "revoked", or "already_revoked" when the
  // certificate was revoked before (nothing changed), with the serial, subject and `reason` (its RFC 5280 name).
  void Revoked(Rpc rpc, const CallInfo& call, const store::CertificateRecord& record, bool already_revoked,
               const std::string& reason);
  // Answered counts a successful answer that needs no audit line of its own (reads).
  void Answered(Rpc rpc) {
    Count(rpc, grpc::StatusCode::OK);
    if (observer_ != nullptr) observer_->OnDecision(rpc, grpc::StatusCode::OK, "", "answered", absl::OkStatus());
  }

  // answered returns how many answers `rpc` gave with `code` (a grpc::StatusCode); a stream counts each request.
  uint64_t answered(Rpc rpc, int code) const {
    return answered_[static_cast<int>(rpc)][code & 31].load(std::memory_order_relaxed);
  }
  // Snapshot returns every non-zero count keyed "RPC CODE" (e.g. "SignCsr INVALID_ARGUMENT").
  std::map<std::string, uint64_t> Snapshot() const;

 private:
  void Count(Rpc rpc, grpc::StatusCode code) {
    answered_[static_cast<int>(rpc)][static_cast<int>(code) & 31].fetch_add(1, std::memory_order_relaxed);
  }
  audit::Entry Entry(Rpc rpc, const CallInfo& call, grpc::StatusCode code) const;

  audit::AuditLog* const audit_;  // borrowed
  const Clock* const clock_;      // borrowed
  Observer* const observer_;      // borrowed; may be null
  std::array<std::array<std::atomic<uint64_t>, 32>, static_cast<int>(Rpc::kCount)> answered_{};
};

}  // namespace linesign::service

#endif  // LINESIGN_SERVER_SERVICE_RPC_COUNTERS_H_
