#include "server/issuance/batch_signer.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/openssl_util.h"

namespace linesign::issuance {
namespace {
// A serial collision needs 2^63 certificates to become likely; three tries means the CSPRNG is broken.
constexpr int kSerialAttempts = 3;

// RecordSans renders typed SANs for the record with the type names records have always had ("DNS",
// "IP Address", "URI", "email") and an IP address as text, so old and new rows read alike.
std::vector<store::San> RecordSans(const std::vector<csr::San>& sans) {
  std::vector<store::San> out;
  out.reserve(sans.size());
  for (const csr::San& san : sans) {
    const char* type = "";
    switch (san.type) {
      case csr::SanType::kDns:
        type = "DNS";
        break;
      case csr::SanType::kIp:
        type = "IP Address";
        break;
      case csr::SanType::kUri:
        type = "URI";
        break;
      case csr::SanType::kEmail:
        type = "email";
        break;
    }
    out.push_back({type, csr::SanValueText(san)});
  }
  return out;
}

bool HasPredecessor(IssuanceRequest::Reason reason) {
  return reason == IssuanceRequest::Reason::kRenewal || reason == IssuanceRequest::Reason::kRekey;
}
}  // namespace

std::unique_ptr<BatchSigner> BatchSigner::Create(const CertificateBuilder* builder, store::IssuanceStore* store,
                                                 Options options) {
  std::unique_ptr<BatchSigner> s(new BatchSigner(builder, store, std::move(options)));
  for (int i = 0; i < s->options_.sign_threads; ++i) s->signers_.emplace_back([p = s.get()] { p->SignLoop(); });
  int n = std::max(1, s->options_.workers);
  for (int i = 0; i < n; ++i) s->workers_.emplace_back([p = s.get()] { p->WorkerLoop(); });
  return s;
}

BatchSigner::~BatchSigner() { Shutdown(); }

absl::Status BatchSigner::Submit(SignJob job, Admission admission) {
  if (options_.observer != nullptr) {
    // The observer sees the answer on its way out; elapsed time from a monotonic clock (the injected Clock dates
    // certificates, this only measures).
    job.done = [inner = std::move(job.done), observer = options_.observer, admission,
                start = std::chrono::steady_clock::now()](absl::StatusOr<store::CertificateRecord> record,
                                                          bool replayed) mutable {
      observer->OnAnswered(admission, absl::FromChrono(std::chrono::steady_clock::now() - start), record.status());
      inner(std::move(record), replayed);
    };
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return absl::UnavailableError("the server is shutting down; retry on another replica");
    if (admission == Admission::kRefuseWhenFull && queue_.size() >= options_.queue_size) {
      return absl::ResourceExhaustedError(
          absl::StrCat("signing queue is full (", options_.queue_size, " requests); retry with backoff"));
    }
    queue_.push_back(std::move(job));
  }
  cv_.notify_one();
  return absl::OkStatus();
}

void BatchSigner::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) {
    if (t.joinable()) t.join();
  }
  // The workers are gone, so no batch waits for a signature any more.
  {
    std::lock_guard<std::mutex> lock(sign_mu_);
    sign_stopping_ = true;
  }
  sign_cv_.notify_all();
  for (auto& t : signers_) {
    if (t.joinable()) t.join();
  }
}

void BatchSigner::SignLoop() {
  while (true) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(sign_mu_);
      sign_cv_.wait(lock, [&] { return !sign_queue_.empty() || sign_stopping_; });
      if (sign_queue_.empty()) return;
      task = std::move(sign_queue_.front());
      sign_queue_.pop_front();
    }
    task();
  }
}

std::vector<absl::StatusOr<IssuedCertificate>> BatchSigner::IssueAll(const std::vector<SignJob>& jobs,
                                                                      const std::vector<std::string>& serials,
                                                                      absl::Time now) {
  std::vector<absl::StatusOr<IssuedCertificate>> out(jobs.size(), absl::UnknownError("not signed"));
  if (signers_.empty() || jobs.size() == 1) {
    for (size_t i = 0; i < jobs.size(); ++i) out[i] = builder_->Issue(jobs[i].request, serials[i], now);
    return out;
  }
  // Every signature of the batch is queued at once; the worker waits for the last.
  std::mutex done_mu;
  std::condition_variable done_cv;
  size_t left = jobs.size();
  {
    std::lock_guard<std::mutex> lock(sign_mu_);
    for (size_t i = 0; i < jobs.size(); ++i) {
      sign_queue_.push_back([&, i] {
        auto cert = builder_->Issue(jobs[i].request, serials[i], now);
        std::lock_guard<std::mutex> done_lock(done_mu);
        out[i] = std::move(cert);
        if (--left == 0) done_cv.notify_one();
      });
    }
  }
  sign_cv_.notify_all();
  std::unique_lock<std::mutex> lock(done_mu);
  done_cv.wait(lock, [&] { return left == 0; });
  return out;
}

size_t BatchSigner::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

void BatchSigner::WorkerLoop() {
  const size_t max_batch = static_cast<size_t>(std::max(1, options_.max_batch));
  // Lingering for a batch to fill only pays under load. A worker whose last batch held one request is serving a
  // quiet line: it signs at once, so a lone station never waits max_linger.
  size_t last_batch = max_batch;
  while (true) {
    std::vector<SignJob> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return !queue_.empty() || stopping_; });
      if (queue_.empty()) return;  // stopping and drained
      if (last_batch > 1 && queue_.size() < max_batch && options_.max_linger > absl::ZeroDuration() && !stopping_) {
        auto deadline = std::chrono::steady_clock::now() + absl::ToChronoMicroseconds(options_.max_linger);
        cv_.wait_until(lock, deadline, [&] { return queue_.size() >= max_batch || stopping_; });
      }
      size_t n = std::min(max_batch, queue_.size());
      batch.reserve(n);
      for (size_t i = 0; i < n; ++i) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      if (!queue_.empty()) cv_.notify_one();
    }
    last_batch = batch.size();
    if (!batch.empty()) ProcessBatch(std::move(batch));
  }
}

bool BatchSigner::AnswerFromStore(SignJob& job) {
  const IssuanceRequest& req = job.request;
  const std::string& identity = req.requester.identity;
  const std::string& request_id = req.requester.request_id;
  auto existing = store_->FindByRequest(identity, request_id);
  if (!existing.ok()) {
    job.done(absl::UnavailableError(absl::StrCat("store lookup failed: ", existing.status().message())), false);
    return true;
  }
  if (!existing->has_value()) return false;
  const store::CertificateRecord& earlier = **existing;
  const std::string& profile = req.profile->name();
  if (!req.csr_sha256.empty() && earlier.csr_sha256 != req.csr_sha256) {
    job.done(absl::AlreadyExistsError(absl::StrCat(
                 "request_id '", request_id, "' was already used by station '", identity,
                 "' for a different CSR (certificate serial ", earlier.serial_hex,
                 "); use a new request_id for a new CSR")),
             false);
  } else if (req.csr_sha256.empty() &&
             (!earlier.csr_sha256.empty() || earlier.spki_sha256 != Hex(Sha256(req.spki_der)) ||
              earlier.subject != req.subject_text)) {
    // Without a CSR the request is its subject and key: the same request id for another one is another request.
    job.done(absl::AlreadyExistsError(absl::StrCat(
                 "request_id '", request_id, "' was already used by '", identity,
                 "' for a different subject or key (certificate serial ", earlier.serial_hex, ")")),
             false);
  } else if (earlier.profile != profile) {
    // A request id names one request: the same CSR under another profile would be another certificate.
    job.done(absl::AlreadyExistsError(absl::StrCat(
                 "request_id '", request_id, "' was already used for serial ", earlier.serial_hex,
                 " under profile '", earlier.profile, "'; a different profile (here '", profile,
                 "') is a different request: use a new request_id")),
             false);
  } else {
    job.done(std::move(**existing), true);
  }
  return true;
}

void BatchSigner::ProcessBatch(std::vector<SignJob> batch) {
  // Retries are rare: rather than a lookup per request before signing, the store's UNIQUE(station, request_id)
  // reports a duplicate at commit, and only then is the earlier record read. A certificate signed for a duplicate
  // is never recorded and never leaves this function.
  std::vector<SignJob> pending = std::move(batch);

  for (int attempt = 0; attempt < kSerialAttempts && !pending.empty(); ++attempt) {
    absl::Time now = options_.clock->Now();
    store::Batch batch;
    std::vector<size_t> index;  // batch.entries[i] belongs to pending[index[i]]
    std::vector<bool> answered(pending.size(), false);
    std::vector<std::string> serials;
    serials.reserve(pending.size());
    for (size_t i = 0; i < pending.size(); ++i) serials.push_back(NewSerial(now));
    std::vector<absl::StatusOr<IssuedCertificate>> certs = IssueAll(pending, serials, now);
    for (size_t i = 0; i < pending.size(); ++i) {
      SignJob& job = pending[i];
      const IssuanceRequest& req = job.request;
      auto& cert = certs[i];
      if (!cert.ok()) {
        job.done(cert.status(), false);
        answered[i] = true;
        continue;
      }
      store::CertificateRecord r;
      r.issuer_id = builder_->ca().issuer_id;
      r.serial_hex = Hex(cert->serial);
      r.subject = req.subject_text;
      r.sans = RecordSans(req.sans);
      r.not_before = absl::ToUnixSeconds(cert->not_before);
      r.not_after = absl::ToUnixSeconds(cert->not_after);
      r.spki_sha256 = Hex(Sha256(req.spki_der));
      r.csr_sha256 = req.csr_sha256;
      r.station = req.requester.identity;
      r.profile = req.profile->name();
      r.request_id = req.requester.request_id;
      r.der = std::move(cert->der);
      r.issued_at = absl::ToUnixSeconds(now);
      if (HasPredecessor(req.reason)) r.renews_serial = req.predecessor_serial;
      store::BatchEntry entry;
      // The certificate row is its own ISSUED event; the request's further events follow it in the log.
      entry.events.reserve(req.events.size());
      // Copies: a serial collision retries the job with its events and outbox items.
      for (store::Event e : req.events) {
        if (e.issuer_id.empty() && e.serial_hex.empty()) e.issuer_id = r.issuer_id, e.serial_hex = r.serial_hex;
        if (e.station.empty()) e.station = r.station;
        if (e.profile.empty()) e.profile = r.profile;
        if (e.time == absl::UnixEpoch()) e.time = now;
        entry.events.push_back(std::move(e));
      }
      entry.outbox = req.outbox;
      // AWS IoT (issue 10): one registration per target of a registering profile, in this same transaction. The
      // two compares are all that profiles without IoT pay.
      if (const v1::ProfileIotConfig& iot = req.profile->config().iot();
          iot.register_() == "with_ca" || iot.register_() == "without_ca") {
        for (const std::string& target : iot.targets()) {
          entry.outbox.push_back(store::IotRegisterItem({r.issuer_id, r.serial_hex, target}, now));
        }
      }
      entry.cert = std::move(r);
      batch.entries.push_back(std::move(entry));
      index.push_back(i);
    }
    auto outcomes = store_->RecordBatch(batch);
    if (!outcomes.ok()) {
      // The commit failed, so nothing signed in this batch may leave the server. Usually nothing was recorded
      // either; when the store lost its connection with the commit under way the batch may have been, and the
      // station is told so: its retry with the same request id gets the recorded certificate if there is one.
      const std::string reason =
          store::IsOutcomeUnknown(outcomes.status())
              ? absl::StrCat("certificate not delivered (it may have been recorded: retry with the same "
                             "request_id to get it): ",
                             outcomes.status().message())
              : absl::StrCat("certificate not issued: ", outcomes.status().message());
      for (size_t k = 0; k < index.size(); ++k) pending[index[k]].done(absl::UnavailableError(reason), false);
      return;
    }
    std::vector<SignJob> retry;
    for (size_t k = 0; k < index.size(); ++k) {
      SignJob& job = pending[index[k]];
      switch ((*outcomes)[k]) {
        case store::RecordOutcome::kRecorded:
          job.done(std::move(batch.entries[k].cert), false);
          break;
        case store::RecordOutcome::kDuplicateRequest:
          if (!AnswerFromStore(job)) {
            job.done(absl::UnavailableError("store reported a duplicate request it cannot find"), false);
          }
          break;
        case store::RecordOutcome::kSerialCollision:
          retry.push_back(std::move(job));
          break;
        case store::RecordOutcome::kPredecessorNotValid:
          // Checked by the maker before submitting; this is the race the store settles (another process renewed,
          // re-keyed or revoked it in between).
          job.done(absl::FailedPreconditionError(absl::StrCat(
                       "certificate ", job.request.predecessor_serial,
                       " is no longer valid or already has a successor (renewed, re-keyed or revoked meanwhile); "
                       "GetCertificate shows which")),
                   false);
          break;
      }
    }
    pending = std::move(retry);
  }
  for (auto& job : pending) job.done(absl::InternalError("serial collided repeatedly; CSPRNG suspect"), false);
}

}  // namespace linesign::issuance
