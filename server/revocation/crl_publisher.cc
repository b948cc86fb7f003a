#include "server/revocation/crl_publisher.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace linesign::revocation {

absl::StatusOr<std::unique_ptr<CrlPublisher>> CrlPublisher::Create(const CrlBuilder* builder,
                                                                   store::RevocationStore* store,
                                                                   Options options) {
  if (options.min_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("crl.min_interval_ms: must be positive");
  }
  if (options.refresh_before <= absl::ZeroDuration() || options.refresh_before >= options.validity) {
    return absl::InvalidArgumentError("crl.refresh_before_seconds: must be positive and less than crl.validity_seconds");
  }
  std::unique_ptr<CrlPublisher> p(new CrlPublisher(builder, store, options));
  LINESIGN_ASSIGN_OR_RETURN(auto latest, store->LatestCrl(builder->ca().issuer_id));
  if (latest.has_value()) {
    std::lock_guard<std::mutex> lock(p->mu_);
    p->Adopt(*latest);
  }
  return p;
}

void CrlPublisher::Adopt(const store::StoredCrl& crl) {
  current_ = PublishedCrl{
      .der = crl.der, .number = crl.number, .this_update = crl.this_update, .next_update = crl.next_update};
  current_revocations_ = crl.revocations;
}

absl::StatusOr<PublishedCrl> CrlPublisher::Current() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!current_.has_value()) {
    return absl::UnavailableError(absl::StrCat("no CRL has been made yet: ",
                                               last_error_.empty() ? "the publisher has not run" : last_error_));
  }
  return *current_;
}

absl::StatusOr<std::string> CrlPublisher::CurrentDer() const {
  LINESIGN_ASSIGN_OR_RETURN(PublishedCrl crl, Current());
  return std::move(crl.der);
}

absl::StatusOr<PublishedCrl> CrlPublisher::CurrentHeader() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!current_.has_value()) return absl::UnavailableError("no CRL has been made yet");
  return PublishedCrl{.number = current_->number,
                      .this_update = current_->this_update,
                      .next_update = current_->next_update};
}

int64_t CrlPublisher::generations() const {
  std::lock_guard<std::mutex> lock(mu_);
  return generations_;
}

absl::Status CrlPublisher::Refresh(absl::Time now) {
  std::lock_guard<std::mutex> generate_lock(generate_mu_);
  const std::string& issuer = builder_->ca().issuer_id;
  absl::StatusOr<store::CrlState> state = store_->GetCrlState(issuer);
  if (!state.ok()) return state.status();
  bool due;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (state->latest_number > (current_.has_value() ? current_->number : 0)) {
      // Another process (or an earlier life of this one) saved a newer CRL: serve that one.
      lock.unlock();
      LINESIGN_ASSIGN_OR_RETURN(auto latest, store_->LatestCrl(issuer));
      lock.lock();
      if (latest.has_value() && (!current_.has_value() || latest->number > current_->number)) Adopt(*latest);
    }
    due = !current_.has_value() || current_revocations_ < state->revocations ||
          now >= current_->next_update - options_.refresh_before;
  }
  if (!due) return absl::OkStatus();
  // Coalescing: revocations arriving faster than min_interval wait for the next CRL, which lists them all.
  if (last_generated_.has_value() && now - *last_generated_ < options_.min_interval) return absl::OkStatus();
  absl::Status st = Generate(now);
  if (!st.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    last_error_ = std::string(st.message());
  }
  return st;
}

absl::Status CrlPublisher::Generate(absl::Time now) {
  const std::string& issuer = builder_->ca().issuer_id;
  last_generated_ = now;
  LINESIGN_ASSIGN_OR_RETURN(store::CrlSnapshot snap, store_->BeginCrl(issuer));
  CrlContent content;
  content.number = snap.number;
  content.this_update = absl::FromUnixSeconds(absl::ToUnixSeconds(now));
  content.next_update = content.this_update + options_.validity;
  content.entries = std::move(snap.entries);
  LINESIGN_ASSIGN_OR_RETURN(std::string der, builder_->Build(content));
  store::StoredCrl stored{.number = snap.number,
                          .revocations = snap.revocations,
                          .this_update = content.this_update,
                          .next_update = content.next_update,
                          .der = std::move(der)};
  LINESIGN_ASSIGN_OR_RETURN(bool saved, store_->SaveCrl(issuer, stored));
  std::lock_guard<std::mutex> lock(mu_);
  ++generations_;
  // Not saved: another process saved a newer one meanwhile; the next round adopts it. Ours is still good (a
  // number the store allocated, a snapshot as fresh as when it was taken), but never replaces a newer current.
  if (saved || !current_.has_value() || stored.number > current_->number) Adopt(stored);
  last_error_.clear();
  return absl::OkStatus();
}

std::unique_ptr<tasks::BackgroundTask> CrlPublisher::MakeTask() {
  return std::make_unique<tasks::FunctionTask>("crl-publisher",
                                               std::min(options_.min_interval, absl::Milliseconds(250)),
                                               [this](absl::Time now) { return Refresh(now); });
}

}  // namespace linesign::revocation
