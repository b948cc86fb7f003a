// BatchSigner: the line-rate core. A bounded queue feeds N workers; each takes up to max_batch requests (waiting
// at most max_linger for the batch to fill), signs them, records the whole batch in one durable store
// transaction (each certificate, which is its own ISSUED event, with the events and outbox items of its request,
// and for a profile with iot.register with_ca / without_ca one iot.register item per iot.targets entry),
// and only then completes every request of the batch (DESIGN invariant 2).
#ifndef LINESIGN_SERVER_ISSUANCE_BATCH_SIGNER_H_
#define LINESIGN_SERVER_ISSUANCE_BATCH_SIGNER_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "server/issuance/certificate_builder.h"
#include "server/issuance/issuance_request.h"
#include "server/store/store.h"

namespace linesign::issuance {

// SignJob is one request its maker has already checked (the CSR front, renewal, ...).
struct SignJob {
  IssuanceRequest request;
  // Called exactly once, from a worker thread, after the record is durable (or with the error). The record's
  // `der` is the certificate; `replayed` is true for a retry answered from the store.
  absl::AnyInvocable<void(absl::StatusOr<store::CertificateRecord> record, bool replayed)> done;
};

class BatchSigner {
 public:
  // How Submit treats a full queue.
  enum class Admission {
    kRefuseWhenFull,  // ResourceExhausted (unary calls: the station retries with backoff)
    kAlways,          // queue anyway: for a caller that bounds its own in-flight requests (a stream's window),
                      // so the queue holds at most queue_size + streams x window jobs
  };

  // Observer watches the signer from outside (metrics), so the signer carries no metrics of its own. Called from
  // worker threads: quick and thread-safe.
  class Observer {
   public:
    virtual ~Observer() = default;
    // OnAnswered: a job submitted with `admission` is about to be answered (its `done` runs next) with `status`,
    // `elapsed` after Submit accepted it (the wait in the queue, the signature and the batch's commit).
    virtual void OnAnswered(Admission admission, absl::Duration elapsed, const absl::Status& status) = 0;
  };

  struct Options {
    int workers = 1;
    int max_batch = 64;
    absl::Duration max_linger = absl::Microseconds(200);
    size_t queue_size = 4096;
    // Signing threads shared by the workers (hsm.sessions). 0: each worker signs its own batch, one request after
    // another. N > 0: a batch's certificates are built and signed on N threads at once (one HSM session each), so
    // a slow HSM (a network round trip per signature) is waited on N times in parallel.
    int sign_threads = 0;
    const Clock* clock = RealClock::Get();  // borrowed; dates the certificates (notBefore, notAfter)
    Observer* observer = nullptr;           // borrowed, optional; must outlive the BatchSigner
  };

  // Create starts the workers. `builder` and `store` are borrowed and must outlive the BatchSigner.
  static std::unique_ptr<BatchSigner> Create(const CertificateBuilder* builder, store::IssuanceStore* store,
                                             Options options);
  // The destructor drains (see Shutdown).
  ~BatchSigner();

  // Submit queues `job`. ResourceExhausted when the queue is full (kRefuseWhenFull) and Unavailable after
  // Shutdown; then `job.done` is not called and the caller answers itself.
  absl::Status Submit(SignJob job, Admission admission = Admission::kRefuseWhenFull);

  // Shutdown refuses new jobs, lets the workers finish every queued one, and joins them. Idempotent.
  void Shutdown();

  // queued returns the number of jobs waiting for a worker.
  size_t queued() const;

 private:
  BatchSigner(const CertificateBuilder* builder, store::IssuanceStore* store, Options options)
      : builder_(builder), store_(store), options_(std::move(options)) {}
  void WorkerLoop();
  void SignLoop();
  void ProcessBatch(std::vector<SignJob> batch);
  // IssueAll builds and signs a certificate for each job in `jobs` with serials `serials` (on the signing threads
  // when there are any, otherwise here, in order).
  std::vector<absl::StatusOr<IssuedCertificate>> IssueAll(const std::vector<SignJob>& jobs,
                                                          const std::vector<std::string>& serials, absl::Time now);
  // AnswerFromStore completes `job`, whose (requester identity, request_id) the store already holds, from that
  // record: a replay when it is the same request (the same CSR, or without a CSR the same subject and key) under
  // the same profile, ALREADY_EXISTS otherwise (a request id names one request). Returns false when there is no
  // earlier record.
  bool AnswerFromStore(SignJob& job);

  const CertificateBuilder* builder_;  // borrowed
  store::IssuanceStore* store_;        // borrowed
  const Options options_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<SignJob> queue_;  // guarded by mu_
  bool stopping_ = false;      // guarded by mu_
  std::vector<std::thread> workers_;

  // The signing threads' queue (Options::sign_threads > 0): tasks from every worker's batch.
  std::mutex sign_mu_;
  std::condition_variable sign_cv_;
  std::deque<std::function<void()>> sign_queue_;  // guarded by sign_mu_
  bool sign_stopping_ = false;                     // guarded by sign_mu_
  std::vector<std::thread> signers_;
};

}  // namespace linesign::issuance

#endif  // LINESIGN_SERVER_ISSUANCE_BATCH_SIGNER_H_
