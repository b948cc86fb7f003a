#include "server/service/ca_service.h"

#include <deque>
#include <mutex>

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

namespace linesign::service {

// SignStreamReactor serves one SignCsrStream. Reads one request at a time; each checked request goes to the batch
// signer, whose worker queues the answer here. Answers are written one at a time in completion order. At most
// kWindow requests are in flight: beyond that no further read is started, which is HTTP/2 flow control for the
// station. gRPC operations are started outside mu_, because gRPC may run a reaction inline.
class SignStreamReactor final : public grpc::ServerBidiReactor<v1::SignCsrRequest, v1::SignCsrStreamResponse> {
 public:
  static constexpr int kWindow = 128;

  SignStreamReactor(CaService* service, std::string peer) : service_(service), peer_(std::move(peer)) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        reads_done_ = true;
      }
      Drive();
      return;
    }
    v1::SignCsrRequest request = std::move(request_);
    const std::string station = "anonymous";
    auto job = service_->Check(request, station);
    if (!job.ok()) {
      LogInfo("refused SignCsrStream request from ", peer_, " request_id=", request.request_id().substr(0, 128), ": ",
              job.status().message());
      Answer(request.request_id(), job.status(), nullptr, false, /*was_in_flight=*/false);
    } else {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++in_flight_;
      }
      std::string id = request.request_id();
      job->done = [this, id](absl::StatusOr<store::CertificateRecord> record, bool replayed) {
        if (record.ok()) {
          Answer(id, absl::OkStatus(), &*record, replayed, true);
        } else {
          LogWarning("SignCsrStream request ", id, " from ", peer_, " failed: ", record.status().ToString());
          Answer(id, record.status(), nullptr, false, true);
        }
      };
      if (absl::Status st = service_->signer_->Submit(*std::move(job)); !st.ok()) {
        Answer(id, st, nullptr, false, true);
      }
    }
    bool read_next;
    {
      std::lock_guard<std::mutex> lock(mu_);
      read_next = in_flight_ < kWindow;
      read_paused_ = !read_next;
    }
    if (read_next) StartRead(&request_);
    Drive();
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      if (!ok) {
        broken_ = true;  // the station went away: drop what is left to write
        writes_.clear();
      } else {
        writes_.pop_front();
      }
    }
    Drive();
  }

  void OnDone() override { delete this; }

 private:
  // Answer queues the response for `id`; `was_in_flight` releases a window slot.
  void Answer(const std::string& id, const absl::Status& status, const store::CertificateRecord* record,
              bool replayed, bool was_in_flight) {
    v1::SignCsrStreamResponse response;
    response.set_request_id(id);
    grpc::Status g = status.ok() ? grpc::Status::OK : ToGrpcStatus(status);
    if (record != nullptr) {
      FillResponse(*record, service_->ca_->chain_pem, replayed, response.mutable_certificate());
      LogInfo(replayed ? "replayed" : "issued", " serial=", record->serial_hex, " subject=\"", record->subject,
              "\" profile=", record->profile, " request_id=", id, " peer=", peer_, " (stream)");
    } else {
      response.mutable_error()->set_code(static_cast<int>(g.error_code()));
      response.mutable_error()->set_message(g.error_message());
    }
    service_->Count(g);
    bool resume_read = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (was_in_flight) --in_flight_;
      if (!broken_) writes_.push_back(std::move(response));
      if (read_paused_ && in_flight_ < kWindow && !reads_done_) {
        read_paused_ = false;
        resume_read = true;
      }
    }
    if (resume_read) StartRead(&request_);
    Drive();
  }

  // Drive starts the next write, or finishes the stream once everything is read, signed and written.
  void Drive() {
    const v1::SignCsrStreamResponse* next = nullptr;
    bool finish = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!writing_ && !writes_.empty()) {
        writing_ = true;
        next = &writes_.front();  // stays put until OnWriteDone pops it
      } else if (!writing_ && writes_.empty() && reads_done_ && in_flight_ == 0 && !finished_) {
        finished_ = true;
        finish = true;
      }
    }
    if (next != nullptr) StartWrite(next);
    if (finish) Finish(grpc::Status::OK);
  }

  CaService* service_;  // borrowed
  const std::string peer_;
  v1::SignCsrRequest request_;  // the one outstanding read's buffer

  std::mutex mu_;
  std::deque<v1::SignCsrStreamResponse> writes_;  // guarded by mu_; front is being written when writing_
  int in_flight_ = 0;                             // guarded by mu_
  bool writing_ = false;                          // guarded by mu_
  bool reads_done_ = false;                       // guarded by mu_
  bool read_paused_ = false;                      // guarded by mu_
  bool broken_ = false;                           // guarded by mu_
  bool finished_ = false;                         // guarded by mu_
};

grpc::ServerBidiReactor<v1::SignCsrRequest, v1::SignCsrStreamResponse>* CaService::SignCsrStream(
    grpc::CallbackServerContext* context) {
  return new SignStreamReactor(this, context->peer());
}

}  // namespace linesign::service
