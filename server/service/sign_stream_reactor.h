// SignStreamReactor serves one SignCsrStream. Reads one request at a time; each checked request goes to the batch
// signer, whose worker queues the answer here. Answers are written one at a time in completion order. The stream
// holds at most limits.stream_window items — requests in flight plus answers (refusals included) not yet written
// — and stops reading while it holds limits.stream_window_bytes (serialized sizes): no further read is started,
// which is HTTP/2 flow control for the station. So a station that stops reading its answers stops being read,
// and the server never queues more for it. Reading resumes when a write completes (or an answer smaller than its
// request replaces it) and the stream is below both limits again. gRPC operations are started outside mu_,
// because gRPC may run a reaction inline.
//
// Draining (SIGTERM): no further read is started; a request that was being read when the drain began is answered
// UNAVAILABLE; once every request read is answered and written, the stream finishes, even with a read still
// outstanding (gRPC then fails that read). The reactor deletes itself when gRPC is done with it and nobody holds a
// reference (DrainTracker::BeginDrain holds one while it tells the stream to drain).
//
// The reactor owns only its stream's state; it reaches everything else through StreamCollaborators.
#ifndef LINESIGN_SERVER_SERVICE_SIGN_STREAM_REACTOR_H_
#define LINESIGN_SERVER_SERVICE_SIGN_STREAM_REACTOR_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "linesign/v1/ca.grpc.pb.h"
#include "server/auth/authenticator.h"
#include "server/issuance/batch_signer.h"
#include "server/service/drain_tracker.h"
#include "server/service/request_checker.h"
#include "server/service/rpc_counters.h"

namespace linesign::service {

// StreamCollaborators: what a stream needs from outside itself. All borrowed; they outlive every stream.
struct StreamCollaborators {
  const auth::Authenticator* authenticator;
  const RequestChecker* checker;
  // submit hands a checked job to the batch signer (which never refuses a stream for a full queue).
  std::function<absl::Status(issuance::SignJob)> submit;
  RpcCounters* counters;  // counts and audits each request's outcome
  DrainTracker* drain;    // stream limits and graceful stop
  const Clock* clock;
  const std::string* chain_pem;  // the CA chain each certificate answer carries
  size_t window;                 // limits.stream_window: items held (requests in flight + answers unwritten)
  size_t window_bytes;           // limits.stream_window_bytes: their serialized bytes
};

class SignStreamReactor final : public grpc::ServerBidiReactor<v1::SignCsrRequest, v1::SignCsrStreamResponse>,
                                public Drainable {
 public:
  // The stream's identity comes from its connection's client certificate: authenticated here, and again for a
  // request when the station trust was reloaded (SIGHUP) or the last check is older than the authenticator's
  // cache time, so a station revoked while its stream is open gets no further certificate on it. A stream that
  // is refused here (unauthenticated, over a stream limit, draining) finishes at once.
  SignStreamReactor(const StreamCollaborators* with, grpc::CallbackServerContext* context);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone() override;

  // Drain: see the class comment.
  void Drain() override;
  void Ref() override { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() override {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

 private:
  CallInfo Call(const std::string& profile, const std::string& request_id) const {
    return CallInfo{identity_, peer_, profile, request_id};
  }
  // Reauthenticate verifies the stream's client certificate now and notes when to do it again.
  absl::StatusOr<std::string> Reauthenticate();
  // StillTrusted re-verifies the certificate when the trust was reloaded or the last check has aged out; cheap
  // otherwise (one atomic load and a clock read). Runs on the one read callback at a time.
  absl::Status StillTrusted();
  // IssueRead starts the read that the caller decided on (issuing_reads_ counted under mu_).
  void IssueRead();
  // Answer queues the response for `id`. A request that was in flight passes its place in the window (and its
  // `in_flight_bytes`) to its answer; a refused one never was in flight, and its answer takes a new place. Either
  // way the place is held until the answer is written. A request id over its limit is not echoed (the answer's
  // request_id is empty) and an error message is cut to kMaxErrorBytes, so a refusal stays small whatever the
  // station sent.
  void Answer(const std::string& id, const absl::Status& status, const store::CertificateRecord* record,
              bool replayed, std::optional<size_t> in_flight_bytes);
  // BelowWindowLocked says whether the stream may read one more request: it holds fewer than window items
  // (requests in flight plus answers not yet written) and fewer than window_bytes bytes.
  bool BelowWindowLocked() const;
  // ResumeReadLocked decides to restart a paused read (and marks it as being issued) once the stream is below
  // its window again; the caller then calls IssueRead.
  bool ResumeReadLocked();
  // Drive starts the next write, or finishes the stream once everything read is signed and written and either
  // the station has closed its side or the server is draining.
  void Drive();

  const StreamCollaborators* const with_;  // borrowed
  const std::string peer_;
  std::string identity_;
  auth::CallerCertificate caller_;  // the connection's client certificate, or the one its trusted proxy forwarded
  absl::Time leaf_not_after_;         // the client certificate's notAfter: no check outlives it
  uint64_t trust_generation_ = 0;     // the authenticator's generation at the last check (read callback only)
  absl::Time checked_until_;          // when the last check ages out (read callback only)
  bool registered_ = false;           // with the drain tracker (set once, in the constructor)
  std::atomic<int> refs_{1};          // gRPC's, until OnDone; plus BeginDrain's while it drains this stream
  v1::SignCsrRequest request_;        // the one outstanding read's buffer

  std::mutex mu_;
  std::deque<v1::SignCsrStreamResponse> writes_;  // guarded by mu_; front is being written when writing_
  size_t in_flight_ = 0;                          // guarded by mu_; requests handed to the signer
  size_t in_flight_bytes_ = 0;                    // guarded by mu_; their serialized size
  size_t unwritten_bytes_ = 0;                    // guarded by mu_; serialized size of writes_
  bool writing_ = false;                          // guarded by mu_
  int issuing_reads_ = 0;  // guarded by mu_; StartReads decided on and not yet issued (a worker's resume and
                           // the read callback's next read may overlap: a count, so neither erases the other)
  bool reads_done_ = false;                       // guarded by mu_
  bool read_paused_ = false;                      // guarded by mu_
  bool draining_ = false;                         // guarded by mu_; no further read (shutdown or refused)
  grpc::Status final_status_;                     // guarded by mu_; the stream's status once draining_
  bool broken_ = false;                           // guarded by mu_
  bool finished_ = false;                         // guarded by mu_
};

}  // namespace linesign::service

#endif  // LINESIGN_SERVER_SERVICE_SIGN_STREAM_REACTOR_H_
