#include "server/service/sign_stream_reactor.h"

#include <algorithm>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "common/utf8.h"
#include "server/service/grpc_status.h"
#include "server/service/peer.h"
#include "server/service/sign_response.h"

namespace linesign::service {
namespace {

// The longest error message a stream answer carries (a refusal is never much larger than this).
constexpr size_t kMaxErrorBytes = 512;

// TruncateUtf8 returns at most `max` bytes of `s`, cut before a UTF-8 continuation byte so that a valid UTF-8
// string stays valid (proto3 strings must be), with "…" appended when anything was cut.
std::string TruncateUtf8(const std::string& s, size_t max) {
  if (s.size() <= max) return s;
  size_t end = max - 3;  // room for the ellipsis (3 bytes)
  while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;
  return absl::StrCat(s.substr(0, end), "\u2026");
}

const grpc::Status& ShuttingDown() {
  static const grpc::Status* status = new grpc::Status(ToGrpcStatus(absl::UnavailableError(
      "server is shutting down: every request it read on this stream has been answered; send the requests that "
      "got no answer again, with the same request_id, after reconnecting")));
  return *status;
}

}  // namespace

SignStreamReactor::SignStreamReactor(const StreamCollaborators* with, grpc::CallbackServerContext* context)
    : with_(with), peer_(context->peer()) {
  auto caller = CallerCertificates(*with_->authenticator, context, with_->clock->Now());
  if (!caller.ok()) {
    Finish(with_->counters->Refused(Rpc::kSignCsrStream, CallInfo{"", peer_, "", ""}, caller.status()));
    return;
  }
  caller_ = *std::move(caller);
  leaf_not_after_ = auth::Authenticator::NotAfter(caller_.leaf_pem);
  auto identity = Reauthenticate();
  if (!identity.ok()) {
    Finish(with_->counters->Refused(Rpc::kSignCsrStream, CallInfo{"", peer_, "", ""}, identity.status()));
    return;
  }
  identity_ = *std::move(identity);
  issuing_reads_ = 1;  // before the tracker can see this stream: no drain may finish it before the read starts
  if (absl::Status st = with_->drain->AddStream(this, identity_); !st.ok()) {
    Finish(with_->counters->Refused(Rpc::kSignCsrStream, Call("", ""), st));
    return;
  }
  registered_ = true;
  IssueRead();
}

void SignStreamReactor::OnReadDone(bool ok) {
  if (!ok) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      reads_done_ = true;
    }
    Drive();
    return;
  }
  v1::SignCsrRequest request = std::move(request_);
  request_.Clear();
  // What a request in flight holds, at most: its checked job is smaller than the message it came in.
  const size_t request_bytes = request.ByteSizeLong();
  bool draining;
  {
    std::lock_guard<std::mutex> lock(mu_);
    draining = draining_;
  }
  absl::Status trusted = StillTrusted();
  if (!trusted.ok()) {
    // Revoked (or no longer trusted) while the stream was open: this request is refused, no further one is
    // read, and the stream ends with the same status once the requests in flight are answered.
    std::lock_guard<std::mutex> lock(mu_);
    if (!draining_) final_status_ = ToGrpcStatus(trusted);
    draining_ = true;
  }
  std::string profile;
  auto job = !trusted.ok() ? absl::StatusOr<issuance::SignJob>(trusted)
             : draining    ? absl::StatusOr<issuance::SignJob>(DrainTracker::Draining())
                           : with_->checker->Check(request, identity_, &profile);
  if (!job.ok()) {
    with_->counters->Refused(Rpc::kSignCsrStream, Call(profile, request.request_id()), job.status());
    Answer(request.request_id(), job.status(), nullptr, false, /*in_flight_bytes=*/std::nullopt);
  } else {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++in_flight_;
      in_flight_bytes_ += request_bytes;
    }
    std::string id = request.request_id();
    // A job in flight holds a reference: its answer runs on a signer worker, where another worker's answer may
    // finish the stream (and gRPC delete it) between this answer's unlock and its Drive.
    Ref();
    job->done = [this, id, profile, request_bytes](absl::StatusOr<store::CertificateRecord> record,
                                                   bool replayed) {
      with_->counters->Completed(Rpc::kSignCsrStream, Call(profile, id), record, replayed);
      Answer(id, record.ok() ? absl::OkStatus() : record.status(), record.ok() ? &*record : nullptr, replayed,
             request_bytes);
      Unref();
    };
    // A stream bounds itself (its window), so it is never refused for a full queue: it slows down.
    if (absl::Status st = with_->submit(*std::move(job)); !st.ok()) {  // then `done` is never called
      with_->counters->Refused(Rpc::kSignCsrStream, Call(profile, id), st);
      Answer(id, st, nullptr, false, request_bytes);
      Unref();
    }
  }
  bool read_next;
  {
    std::lock_guard<std::mutex> lock(mu_);
    read_next = BelowWindowLocked() && !draining_ && !finished_;
    read_paused_ = !read_next;
    if (read_next) ++issuing_reads_;
  }
  if (read_next) {
    IssueRead();
  } else {
    Drive();
  }
}

void SignStreamReactor::OnWriteDone(bool ok) {
  bool resume_read;
  {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) {
      broken_ = true;  // the station went away: drop what is left to write
      writes_.clear();
      unwritten_bytes_ = 0;
    } else {
      unwritten_bytes_ -= writes_.front().ByteSizeLong();
      writes_.pop_front();
    }
    resume_read = ResumeReadLocked();
  }
  if (resume_read) {
    IssueRead();
  } else {
    Drive();
  }
}

void SignStreamReactor::OnDone() {
  if (registered_) with_->drain->RemoveStream(this, identity_);
  Unref();
}

void SignStreamReactor::Drain() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!draining_) final_status_ = ShuttingDown();
    draining_ = true;
  }
  Drive();
}

absl::StatusOr<std::string> SignStreamReactor::Reauthenticate() {
  const absl::Time now = with_->clock->Now();
  trust_generation_ = with_->authenticator->generation();
  checked_until_ = std::min(now + auth::Authenticator::kSuccessCacheTime, leaf_not_after_);
  return AuthenticateCaller(*with_->authenticator, caller_, now);
}

absl::Status SignStreamReactor::StillTrusted() {
  if (with_->authenticator->generation() == trust_generation_ && with_->clock->Now() < checked_until_) {
    return absl::OkStatus();
  }
  auto identity = Reauthenticate();
  if (!identity.ok()) return identity.status();
  if (*identity != identity_) {
    return absl::UnauthenticatedError(absl::StrCat("the stream's identity changed from '", identity_, "' to '",
                                                   *identity, "' after the station trust was reloaded"));
  }
  return absl::OkStatus();
}

void SignStreamReactor::IssueRead() {
  StartRead(&request_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    --issuing_reads_;
  }
  Drive();
}

void SignStreamReactor::Answer(const std::string& id, const absl::Status& status,
                               const store::CertificateRecord* record, bool replayed,
                               std::optional<size_t> in_flight_bytes) {
  v1::SignCsrStreamResponse response;
  // Never echo an over-long id; a refused id may not be UTF-8.
  if (id.size() <= kMaxRequestIdBytes) response.set_request_id(ToValidUtf8(id));
  grpc::Status g = status.ok() ? grpc::Status::OK : ToGrpcStatus(status);
  if (record != nullptr) {
    FillResponse(*record, *with_->chain_pem, replayed, response.mutable_certificate());
  } else {
    response.mutable_error()->set_code(static_cast<int>(g.error_code()));
    response.mutable_error()->set_message(TruncateUtf8(ToValidUtf8(g.error_message()), kMaxErrorBytes));
  }
  const size_t answer_bytes = response.ByteSizeLong();
  bool resume_read;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (in_flight_bytes.has_value()) {
      --in_flight_;
      in_flight_bytes_ -= *in_flight_bytes;
    }
    if (!broken_ && !finished_) {
      writes_.push_back(std::move(response));
      unwritten_bytes_ += answer_bytes;
    }
    resume_read = ResumeReadLocked();
  }
  if (resume_read) {
    IssueRead();
  } else {
    Drive();
  }
}

bool SignStreamReactor::BelowWindowLocked() const {
  return in_flight_ + writes_.size() < with_->window && in_flight_bytes_ + unwritten_bytes_ < with_->window_bytes;
}

bool SignStreamReactor::ResumeReadLocked() {
  if (!read_paused_ || !BelowWindowLocked() || reads_done_ || draining_ || finished_) return false;
  read_paused_ = false;
  ++issuing_reads_;
  return true;
}

void SignStreamReactor::Drive() {
  const v1::SignCsrStreamResponse* next = nullptr;
  bool finish = false;
  grpc::Status status;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    if (!writing_ && !writes_.empty()) {
      writing_ = true;
      next = &writes_.front();  // stays put until OnWriteDone pops it
    } else if (!writing_ && writes_.empty() && in_flight_ == 0 && issuing_reads_ == 0 && (reads_done_ || draining_)) {
      finished_ = true;
      finish = true;
      // A station that had closed its side got every answer: OK, unless it was refused meanwhile.
      if (!reads_done_ || final_status_.error_code() == grpc::StatusCode::UNAUTHENTICATED) status = final_status_;
    }
  }
  if (next != nullptr) StartWrite(next);
  if (finish) Finish(status);
}

}  // namespace linesign::service
