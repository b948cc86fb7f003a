#include "server/iot/registrar_watch.h"

#include <map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace linesign::iot {

RegistrationWatch::RegistrationWatch(store::IotRegistrationStore* store, Options options)
    : store_(store), options_(options) {
  thread_ = std::thread([this] { Loop(); });
}

RegistrationWatch::~RegistrationWatch() { Stop(); }

absl::Status RegistrationWatch::Wait(const store::IotRegistrationKey& key, absl::Time deadline, Done done) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stop_) return absl::UnavailableError("server is shutting down; retry later");
  if (static_cast<int>(waiters_.size()) >= options_.max_waiters) {
    return absl::ResourceExhaustedError(absl::StrCat(options_.max_waiters,
                                                     " AWS IoT registrations are waited on already; retry later"));
  }
  waiters_.push_back(Waiter{key, deadline, std::move(done), ""});
  dirty_.insert(Key{key.issuer_id, key.serial_hex, key.target});
  cv_.notify_all();
  return absl::OkStatus();
}

void RegistrationWatch::Notify(const store::IotRegistrationKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  if (waiters_.empty()) return;  // the common case on a busy line: nobody waits
  dirty_.insert(Key{key.issuer_id, key.serial_hex, key.target});
  cv_.notify_all();
}

int RegistrationWatch::waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(waiters_.size());
}

void RegistrationWatch::Stop() {
  std::list<Waiter> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    stop_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    left.swap(waiters_);
  }
  for (Waiter& w : left) std::move(w.done)(absl::UnavailableError("server is shutting down; retry later"));
}

void RegistrationWatch::Loop() {
  absl::Time next_poll = absl::Now() + options_.poll;
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    absl::Time wake = next_poll;
    for (const Waiter& w : waiters_) wake = std::min(wake, w.deadline);
    if (dirty_.empty()) {
      cv_.wait_for(lock, absl::ToChronoNanoseconds(std::max(absl::ZeroDuration(), wake - absl::Now())));
    }
    if (stop_) break;
    const absl::Time now = absl::Now();
    std::set<Key> read;
    if (now >= next_poll) {
      for (const Waiter& w : waiters_) read.insert(Key{w.key.issuer_id, w.key.serial_hex, w.key.target});
      next_poll = now + options_.poll;
    }
    read.insert(dirty_.begin(), dirty_.end());
    dirty_.clear();
    // Read outside the lock: Wait and Notify (the registrar's workers) never wait behind the store.
    lock.unlock();
    std::map<Key, absl::StatusOr<std::optional<store::IotRegistration>>> found;
    for (const Key& k : read) {
      found.emplace(k, store_->GetIotRegistration({std::get<0>(k), std::get<1>(k), std::get<2>(k)}));
    }
    std::vector<std::pair<Done, absl::StatusOr<store::IotRegistration>>> answers;
    lock.lock();
    const absl::Time after = absl::Now();
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      auto f = found.find(Key{it->key.issuer_id, it->key.serial_hex, it->key.target});
      std::optional<absl::StatusOr<store::IotRegistration>> answer;
      // A failed read (the store briefly unavailable) is tried again at the next poll, up to the deadline.
      if (f != found.end() && f->second.ok()) {
        const std::optional<store::IotRegistration>& r = *f->second;
        if (!r.has_value()) {
          answer = absl::NotFoundError("no AWS IoT registration of that certificate with that target");
        } else if (r->state != store::IotRegistrationState::kPending) {
          answer = *r;
        } else {
          it->last_state = absl::StrCat(
              "still pending after ", r->attempts, " failed attempts",
              r->error_code.empty() ? "" : absl::StrCat(" (last: ", r->error_code, ": ", r->error_message, ")"));
        }
      }
      if (!answer.has_value() && after >= it->deadline) {
        answer = absl::DeadlineExceededError(absl::StrCat(
            "AWS IoT registration of ", it->key.serial_hex, " with target '", it->key.target, "' did not end in time",
            it->last_state.empty() ? "" : absl::StrCat(": ", it->last_state)));
      }
      if (answer.has_value()) {
        answers.emplace_back(std::move(it->done), *std::move(answer));
        it = waiters_.erase(it);
      } else {
        ++it;
      }
    }
    lock.unlock();
    for (auto& [done, answer] : answers) std::move(done)(std::move(answer));
    lock.lock();
  }
}

}  // namespace linesign::iot
