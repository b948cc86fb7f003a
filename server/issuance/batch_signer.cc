#include "server/issuance/batch_signer.h"

#include "absl/strings/str_cat.h"
#include "common/openssl_util.h"

namespace linesign::issuance {
namespace {
// A serial collision needs 2^63 certificates to become likely; three tries means the CSPRNG is broken.
constexpr int kSerialAttempts = 3;

// ToSans types the CSR front's "TYPE:value" texts: the type is everything before the first ':' ("DNS",
// "IP Address", "URI", "email"), the value everything after it, byte for byte. A text without ':' (the front
// never makes one) is kept whole as the value of an empty type rather than dropped.
std::vector<store::San> ToSans(const std::vector<std::string>& texts) {
  std::vector<store::San> sans;
  sans.reserve(texts.size());
  for (const std::string& text : texts) {
    size_t colon = text.find(':');
    if (colon == std::string::npos) {
      sans.push_back({"", text});
    } else {
      sans.push_back({text.substr(0, colon), text.substr(colon + 1)});
    }
  }
  return sans;
}
}  // namespace

std::unique_ptr<BatchSigner> BatchSigner::Create(const CertificateBuilder* builder, store::IssuanceStore* store,
                                                 Options options) {
  std::unique_ptr<BatchSigner> s(new BatchSigner(builder, store, std::move(options)));
  int n = std::max(1, s->options_.workers);
  for (int i = 0; i < n; ++i) s->workers_.emplace_back([p = s.get()] { p->WorkerLoop(); });
  return s;
}

BatchSigner::~BatchSigner() { Shutdown(); }

absl::Status BatchSigner::Submit(SignJob job, Admission admission) {
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

bool BatchSigner::AnswerFromStore(SignJob& job, const std::string& csr_sha256) {
  auto existing = store_->FindByRequest(job.station, job.request_id);
  if (!existing.ok()) {
    job.done(absl::UnavailableError(absl::StrCat("store lookup failed: ", existing.status().message())), false);
    return true;
  }
  if (!existing->has_value()) return false;
  if ((*existing)->csr_sha256 != csr_sha256) {
    job.done(absl::AlreadyExistsError(absl::StrCat(
                 "request_id '", job.request_id, "' was already used by station '", job.station,
                 "' for a different CSR (certificate serial ", (*existing)->serial_hex,
                 "); use a new request_id for a new CSR")),
             false);
  } else if ((*existing)->profile != job.profile) {
    // A request id names one request: the same CSR under another profile would be another certificate.
    job.done(absl::AlreadyExistsError(absl::StrCat(
                 "request_id '", job.request_id, "' was already used for serial ", (*existing)->serial_hex,
                 " under profile '", (*existing)->profile, "'; a different profile (here '", job.profile,
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
  std::vector<std::string> csr_hashes;
  csr_hashes.reserve(pending.size());
  for (const auto& job : pending) csr_hashes.push_back(Hex(Sha256(job.csr.der)));

  for (int attempt = 0; attempt < kSerialAttempts && !pending.empty(); ++attempt) {
    absl::Time now = options_.clock->Now();
    store::Batch batch;
    std::vector<size_t> index;  // batch.entries[i] belongs to pending[index[i]]
    std::vector<bool> answered(pending.size(), false);
    for (size_t i = 0; i < pending.size(); ++i) {
      SignJob& job = pending[i];
      auto cert = builder_->Issue(job.csr, job.profile, NewSerial(), now);
      if (!cert.ok()) {
        job.done(cert.status(), false);
        answered[i] = true;
        continue;
      }
      store::CertificateRecord r;
      r.issuer_id = builder_->ca().issuer_id;
      r.serial_hex = Hex(cert->serial);
      r.subject = job.csr.subject_text;
      r.sans = ToSans(job.csr.sans);
      r.not_before = absl::ToUnixSeconds(cert->not_before);
      r.not_after = absl::ToUnixSeconds(cert->not_after);
      r.spki_sha256 = Hex(Sha256(job.csr.spki_der));
      r.csr_sha256 = csr_hashes[i];
      r.station = job.station;
      r.profile = job.profile;
      r.request_id = job.request_id;
      r.der = std::move(cert->der);
      r.issued_at = absl::ToUnixSeconds(now);
      store::BatchEntry entry;
      entry.events.push_back(store::Event{.type = store::kEventIssued,
                                          .issuer_id = r.issuer_id,
                                          .serial_hex = r.serial_hex,
                                          .station = r.station,
                                          .profile = r.profile,
                                          .time = now});
      entry.cert = std::move(r);
      batch.entries.push_back(std::move(entry));
      index.push_back(i);
    }
    auto outcomes = store_->RecordBatch(batch);
    if (!outcomes.ok()) {
      // Nothing was committed, so nothing signed in this batch may leave the server.
      for (size_t k = 0; k < index.size(); ++k) {
        pending[index[k]].done(absl::UnavailableError(absl::StrCat("certificate not issued: ",
                                                                   outcomes.status().message())),
                               false);
      }
      return;
    }
    std::vector<SignJob> retry;
    std::vector<std::string> retry_hashes;
    for (size_t k = 0; k < index.size(); ++k) {
      SignJob& job = pending[index[k]];
      switch ((*outcomes)[k]) {
        case store::RecordOutcome::kRecorded:
          job.done(std::move(batch.entries[k].cert), false);
          break;
        case store::RecordOutcome::kDuplicateRequest:
          if (!AnswerFromStore(job, csr_hashes[index[k]])) {
            job.done(absl::UnavailableError("store reported a duplicate request it cannot find"), false);
          }
          break;
        case store::RecordOutcome::kSerialCollision:
          retry.push_back(std::move(job));
          retry_hashes.push_back(csr_hashes[index[k]]);
          break;
      }
    }
    pending = std::move(retry);
    csr_hashes = std::move(retry_hashes);
  }
  for (auto& job : pending) job.done(absl::InternalError("serial collided repeatedly; CSPRNG suspect"), false);
}

}  // namespace linesign::issuance
