#include "server/service/rpc_counters.h"

#include "absl/strings/str_cat.h"
#include "common/openssl_util.h"
#include "common/utf8.h"
#include "server/service/grpc_status.h"

namespace linesign::service {
namespace {
constexpr size_t kMaxRequestIdBytes = 128;
}  // namespace

const char* RpcName(Rpc rpc) {
  switch (rpc) {
    case Rpc::kSignCsr:
      return "SignCsr";
    case Rpc::kSignCsrStream:
      return "SignCsrStream";
    case Rpc::kGetCaChain:
      return "GetCaChain";
    case Rpc::kGetCertificate:
      return "GetCertificate";
    case Rpc::kGetStats:
      return "GetStats";
    case Rpc::kListCertificates:
      return "ListCertificates";
    case Rpc::kRevokeCertificate:
      return "RevokeCertificate";
    case Rpc::kGetCrl:
      return "GetCrl";
    // Lifecycle (issue 11).
    case Rpc::kRenewCertificate:
      return "RenewCertificate";
    case Rpc::kRekeyCertificate:
      return "RekeyCertificate";
    case Rpc::kWatchEvents:
      return "WatchEvents";
    case Rpc::kRegisterIotCa:
      return "RegisterCaCertificate";
    case Rpc::kGetIotCaStatus:
      return "GetCaStatus";
    case Rpc::kSetIotCaStatus:
      return "SetCaStatus";
    case Rpc::kAwaitIotRegistration:
      return "AwaitIotRegistration";
    case Rpc::kEnqueueIotRegistrations:
      return "EnqueueIotRegistrations";
    case Rpc::kGetIotRegistrations:
      return "GetIotRegistrations";
    case Rpc::kGetIotStatus:
      return "GetIotStatus";
    case Rpc::kCount:
      break;
  }
  return "?";
}

audit::Entry RpcCounters::Entry(Rpc rpc, const CallInfo& call, grpc::StatusCode code) const {
  audit::Entry e;
  e.time = clock_->Now();
  e.rpc = RpcName(rpc);
  e.identity = call.identity;
  e.peer = call.peer;
  e.profile = ToValidUtf8(call.profile);
  // The audit log carries at most 128 bytes of a request id, as valid UTF-8 (each other byte \xHH).
  e.request_id = ToValidUtf8(call.request_id.substr(0, kMaxRequestIdBytes));
  e.code = StatusCodeName(code);
  return e;
}

grpc::Status RpcCounters::Refused(Rpc rpc, const CallInfo& call, const absl::Status& why) {
  grpc::Status st = ToGrpcStatus(why);
  Count(rpc, st.error_code());
  audit::Entry e = Entry(rpc, call, st.error_code());
  e.outcome = "refused";
  e.reason = std::string(why.message());
  audit_->Record(e);
  if (observer_ != nullptr) observer_->OnDecision(rpc, st.error_code(), call.identity, e.outcome, why);
  return st;
}

void RpcCounters::Revoked(Rpc rpc, const CallInfo& call, const store::CertificateRecord& record,
                          bool already_revoked, const std::string& reason) {
  Count(rpc, grpc::StatusCode::OK);
  audit::Entry e = Entry(rpc, call, grpc::StatusCode::OK);
  e.outcome = already_revoked ? "already_revoked" : "revoked";
  e.serial_hex = record.serial_hex;
  e.subject = ToValidUtf8(record.subject);
  e.reason = reason;
  audit_->Record(e);
}

void RpcCounters::Completed(Rpc rpc, const CallInfo& call, const absl::StatusOr<store::CertificateRecord>& record,
                            bool replayed) {
  grpc::StatusCode code = record.ok() ? grpc::StatusCode::OK : ToGrpcStatus(record.status()).error_code();
  Count(rpc, code);
  audit::Entry e = Entry(rpc, call, code);
  if (record.ok()) {
    e.outcome = replayed ? "replayed" : "issued";
    e.serial_hex = record->serial_hex;
    e.subject = record->subject;
  } else {
    e.outcome = code == grpc::StatusCode::ALREADY_EXISTS ? "refused" : "failed";
    e.reason = std::string(record.status().message());
  }
  audit_->Record(e);
  if (observer_ != nullptr) observer_->OnDecision(rpc, code, call.identity, e.outcome, record.status());
}

std::map<std::string, uint64_t> RpcCounters::Snapshot() const {
  std::map<std::string, uint64_t> out;
  for (int r = 0; r < static_cast<int>(Rpc::kCount); ++r) {
    for (int c = 0; c < 32; ++c) {
      uint64_t n = answered_[r][c].load(std::memory_order_relaxed);
      if (n > 0) out[absl::StrCat(RpcName(static_cast<Rpc>(r)), " ", StatusCodeName(c))] = n;
    }
  }
  return out;
}

}  // namespace linesign::service
