#include "server/service/ca_service.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/openssl_util.h"
#include "server/service/grpc_status.h"

namespace linesign::service {
namespace {

constexpr size_t kMaxRequestIdBytes = 128;

absl::Status CheckRequestId(const std::string& id) {
  if (id.empty()) return absl::InvalidArgumentError("request_id is required (1 to 128 printable ASCII characters)");
  if (id.size() > kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat("request_id of ", id.size(), " bytes exceeds 128"));
  }
  for (char c : id) {
    if (!absl::ascii_isprint(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError("request_id must be printable ASCII");
    }
  }
  return absl::OkStatus();
}

}  // namespace

void FillResponse(const store::CertificateRecord& record, const std::string& chain_pem, bool replayed,
                  v1::SignCsrResponse* response) {
  response->set_certificate_der(record.der);
  response->set_certificate_pem(PemEncode("CERTIFICATE", record.der));
  response->set_chain_pem(chain_pem);
  response->set_serial_hex(record.serial_hex);
  response->mutable_not_before()->set_seconds(record.not_before);
  response->mutable_not_after()->set_seconds(record.not_after);
  response->set_request_id(record.request_id);
  response->set_replayed(replayed);
}

absl::StatusOr<issuance::SignJob> CaService::Check(const v1::SignCsrRequest& request,
                                                   const std::string& station) const {
  absl::string_view input = request.csr_case() == v1::SignCsrRequest::kCsrDer ? request.csr_der()
                                                                              : request.csr_pem();
  auto der = csr::DecodeCsr(input);
  if (!der.ok()) return der.status();
  if (auto st = CheckRequestId(request.request_id()); !st.ok()) return st;
  const std::string& profile_name = request.profile().empty() ? config_->default_profile() : request.profile();
  auto profile = config_->profiles().find(profile_name);
  if (profile == config_->profiles().end()) {
    return absl::InvalidArgumentError(absl::StrCat("unknown profile '", profile_name, "'"));
  }
  auto checked = csr::CheckCsr(*der, profile->second, profile_name);
  if (!checked.ok()) return checked.status();
  issuance::SignJob job;
  job.csr = *std::move(checked);
  job.profile = profile_name;
  job.station = station;
  job.request_id = request.request_id();
  return job;
}

grpc::ServerUnaryReactor* CaService::SignCsr(grpc::CallbackServerContext* context, const v1::SignCsrRequest* request,
                                             v1::SignCsrResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  // Station identity comes from mTLS once stations authenticate; until then every caller is one station.
  std::string station = "anonymous";
  auto job = Check(*request, station);
  if (!job.ok()) {
    grpc::Status st = ToGrpcStatus(job.status());
    LogInfo("refused SignCsr from ", context->peer(), " request_id=", request->request_id().substr(0, 128), ": ",
            job.status().message());
    Count(st);
    reactor->Finish(st);
    return reactor;
  }
  std::string peer = context->peer();
  job->done = [this, reactor, response, peer](absl::StatusOr<store::CertificateRecord> record, bool replayed) {
    if (!record.ok()) {
      LogWarning("SignCsr from ", peer, " failed: ", record.status().ToString());
      grpc::Status st = ToGrpcStatus(record.status());
      Count(st);
      reactor->Finish(st);
      return;
    }
    LogInfo(replayed ? "replayed" : "issued", " serial=", record->serial_hex, " subject=\"", record->subject,
            "\" profile=", record->profile, " request_id=", record->request_id, " peer=", peer);
    FillResponse(*record, ca_->chain_pem, replayed, response);
    Count(grpc::Status::OK);
    reactor->Finish(grpc::Status::OK);
  };
  if (absl::Status st = signer_->Submit(*std::move(job)); !st.ok()) {
    grpc::Status g = ToGrpcStatus(st);
    Count(g);
    reactor->Finish(g);
  }
  return reactor;
}

grpc::ServerUnaryReactor* CaService::GetCaChain(grpc::CallbackServerContext* context,
                                                const v1::GetCaChainRequest* request,
                                                v1::GetCaChainResponse* response) {
  response->set_chain_pem(ca_->chain_pem);
  response->set_issuer_certificate_der(ca_->certificate_der);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace linesign::service
