#include "server/service/drain_tracker.h"

#include <vector>

#include "absl/strings/str_cat.h"

namespace linesign::service {

absl::Status DrainTracker::Draining() {
  return absl::UnavailableError(
      "server is shutting down: no new signing requests are taken; retry with the same request_id on another "
      "replica or after the restart");
}

bool DrainTracker::Enter(bool even_when_draining) {
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_ && !even_when_draining) return false;
  ++active_;
  return true;
}

void DrainTracker::Leave() {
  std::lock_guard<std::mutex> lock(mu_);
  if (--active_ == 0) idle_.notify_all();
}

absl::Status DrainTracker::AddStream(Drainable* stream, const std::string& identity) {
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_) return Draining();
  auto known = streams_by_identity_.find(identity);
  const uint32_t open = known == streams_by_identity_.end() ? 0 : known->second;
  if (open >= limits_.max_streams_per_identity) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "station '", identity, "' already has ", open, " SignCsrStream streams open (signer.max_streams_per_station ",
        limits_.max_streams_per_identity, "); send more requests on an open stream, or close one first"));
  }
  if (streams_.size() >= limits_.max_streams) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the server already has ", streams_.size(), " SignCsrStream streams open (limits.max_streams ",
        limits_.max_streams, "); retry with backoff, or send more requests on a stream already open"));
  }
  ++streams_by_identity_[identity];
  streams_.insert(stream);
  ++active_;
  return absl::OkStatus();
}

void DrainTracker::RemoveStream(Drainable* stream, const std::string& identity) {
  std::lock_guard<std::mutex> lock(mu_);
  streams_.erase(stream);
  if (auto it = streams_by_identity_.find(identity); it != streams_by_identity_.end() && --it->second == 0) {
    streams_by_identity_.erase(it);
  }
  if (--active_ == 0) idle_.notify_all();
}

void DrainTracker::BeginDrain() {
  std::vector<Drainable*> streams;
  {
    std::lock_guard<std::mutex> lock(mu_);
    draining_ = true;
    for (Drainable* s : streams_) {
      s->Ref();  // keeps it alive until Drain below has returned, even if gRPC is done with it meanwhile
      streams.push_back(s);
    }
  }
  // Outside the lock: a stream that finishes inside Drain calls RemoveStream.
  for (Drainable* s : streams) {
    s->Drain();
    s->Unref();
  }
}

bool DrainTracker::WaitUntilIdle(absl::Time deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  return idle_.wait_until(lock, absl::ToChronoTime(deadline), [this] { return active_ == 0; });
}

bool DrainTracker::draining() const {
  std::lock_guard<std::mutex> lock(mu_);
  return draining_;
}

size_t DrainTracker::open_streams() const {
  std::lock_guard<std::mutex> lock(mu_);
  return streams_.size();
}

}  // namespace linesign::service
