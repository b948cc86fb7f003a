#include "server/service/event_watch.h"

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/utf8.h"

namespace linesign::service {

// Watcher is one stream. Invariants (under mu_): StartWrite only while no write is in flight and Finish has not
// been called; Finish only while no write is in flight, and once. gRPC may run OnWriteDone on the thread that
// called StartWrite, so no lock is held across either call.
class EventWatchers::Watcher final : public grpc::ServerWriteReactor<v1::WatchEventsResponse> {
 public:
  Watcher(EventWatchers* hub, int64_t cursor, bool stop_at_end, std::function<void(const grpc::Status&)> on_end)
      : hub_(hub), stop_at_end_(stop_at_end), read_cursor_(cursor), sent_cursor_(cursor), on_end_(std::move(on_end)) {}

  // Keep holds the reactor alive while gRPC may call it; released in OnDone.
  void Keep(std::shared_ptr<Watcher> self) { self_ = std::move(self); }

  // Room returns the cursor to read after and how many events the stream can take, or 0 when it takes none now.
  size_t Room(int64_t* cursor) {
    std::lock_guard<std::mutex> lock(mu_);
    *cursor = read_cursor_;
    if (finish_called_ || stop_) return 0;
    return kMaxBuffered - pending_.size();
  }

  // Add queues events read after the cursor; `full` says the read filled the room (more may be waiting).
  void Add(std::vector<store::Event> events, bool full) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      more_ = full;
      if (!full) caught_up_ = true;
      for (store::Event& e : events) {
        if (e.id <= read_cursor_) continue;  // never twice
        read_cursor_ = e.id;
        pending_.push_back(std::move(e));
      }
    }
    Pump();
  }

  // RequestStop ends the stream UNAVAILABLE once its write in flight is done.
  void RequestStop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    Pump();
  }

  bool done() const {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      if (ok) {
        sent_cursor_ = current_.cursor();
      } else {
        broken_ = true;  // the caller went away
      }
    }
    Pump();
  }

  void OnCancel() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      broken_ = true;
    }
    Pump();
  }

  void OnDone() override {
    grpc::Status final_status;
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
      final_status = final_status_;
    }
    if (on_end_) on_end_(final_status);
    hub_->Closed();
    self_.reset();  // the hub's reference (until its next round) may be the last
  }

 private:
  // Pump starts the next write, or finishes the stream when it must end, if nothing is in flight.
  void Pump() {
    std::unique_lock<std::mutex> lock(mu_);
    if (writing_ || finish_called_) return;
    if (broken_ || stop_) {
      finish_called_ = true;
      final_status_ =
          broken_ ? grpc::Status(grpc::StatusCode::CANCELLED, "the watcher went away")
                  : grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                 absl::StrCat("the server is shutting down; resume with after_cursor ", sent_cursor_));
      grpc::Status st = final_status_;
      lock.unlock();
      Finish(st);
      return;
    }
    if (pending_.empty() && caught_up_ && stop_at_end_) {
      finish_called_ = true;
      final_status_ = grpc::Status::OK;
      lock.unlock();
      Finish(grpc::Status::OK);
      return;
    }
    if (pending_.empty()) {
      const bool more = more_;
      more_ = false;
      lock.unlock();
      if (more) hub_->Wake();  // a backlog: read on at once instead of a poll interval later
      return;
    }
    const store::Event e = std::move(pending_.front());
    pending_.pop_front();
    current_.Clear();
    current_.set_cursor(e.id);
    current_.set_type(ToValidUtf8(e.type));
    current_.set_serial_hex(ToValidUtf8(e.serial_hex));
    current_.set_station(ToValidUtf8(e.station));
    current_.set_profile(ToValidUtf8(e.profile));
    const int64_t us = absl::ToUnixMicros(e.time);
    current_.mutable_time()->set_seconds(us / 1000000);
    current_.mutable_time()->set_nanos(static_cast<int32_t>(us % 1000000) * 1000);
    current_.set_data(ToValidUtf8(e.data));
    writing_ = true;
    lock.unlock();
    StartWrite(&current_);
  }

  EventWatchers* const hub_;
  const bool stop_at_end_;
  mutable std::mutex mu_;
  std::shared_ptr<Watcher> self_;
  int64_t read_cursor_;                 // guarded by mu_: the last event queued
  int64_t sent_cursor_;                 // guarded by mu_: the last event the caller was sent
  std::deque<store::Event> pending_;    // guarded by mu_
  v1::WatchEventsResponse current_;     // written only while !writing_ (under mu_), read by gRPC while writing_
  bool writing_ = false;                // guarded by mu_
  bool finish_called_ = false;          // guarded by mu_
  bool broken_ = false;                 // guarded by mu_
  bool stop_ = false;                   // guarded by mu_
  bool done_ = false;                   // guarded by mu_
  bool more_ = false;                   // guarded by mu_; the last read was full
  bool caught_up_ = false;              // guarded by mu_; a read found the end of the log
  grpc::Status final_status_;           // guarded by mu_
  std::function<void(const grpc::Status&)> on_end_;
};

EventWatchers::EventWatchers(store::EventReader* reader, Options options)
    : reader_(reader), options_(options), thread_([this] { Loop(); }) {}

EventWatchers::~EventWatchers() {
  Stop();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

absl::StatusOr<grpc::ServerWriteReactor<v1::WatchEventsResponse>*> EventWatchers::Open(
    int64_t after_cursor, bool stop_at_end, std::function<void(const grpc::Status&)> on_end) {
  if (after_cursor < 0) {
    return absl::InvalidArgumentError(absl::StrCat("after_cursor ", after_cursor,
                                                   " is negative: 0 for the whole log, else a cursor received"));
  }
  auto w = std::make_shared<Watcher>(this, after_cursor, stop_at_end, std::move(on_end));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return absl::UnavailableError("the server is shutting down; retry on another replica");
    if (open_ >= options_.max_watchers) {
      return absl::ResourceExhaustedError(absl::StrCat("the server already has ", open_,
                                                       " WatchEvents streams open (events.max_watchers ",
                                                       options_.max_watchers, "); retry later"));
    }
    ++open_;
    watchers_.push_back(w);
  }
  w->Keep(w);
  Wake();  // its first events now, not after a poll interval
  return w.get();
}

void EventWatchers::Stop() {
  std::vector<std::shared_ptr<Watcher>> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopped_ = true;
    all = watchers_;
  }
  for (auto& w : all) w->RequestStop();
}

size_t EventWatchers::open() const {
  std::lock_guard<std::mutex> lock(mu_);
  return open_;
}

void EventWatchers::Closed() {
  std::lock_guard<std::mutex> lock(mu_);
  --open_;
}

void EventWatchers::Wake() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake_ = true;
  }
  cv_.notify_all();
}

void EventWatchers::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    // Drop the streams that ended, then feed the others without holding the hub's lock (a store read may wait).
    std::erase_if(watchers_, [](const std::shared_ptr<Watcher>& w) { return w->done(); });
    std::vector<std::shared_ptr<Watcher>> all = watchers_;
    lock.unlock();
    for (auto& w : all) {
      int64_t cursor = 0;
      size_t room = w->Room(&cursor);
      if (room == 0) continue;
      auto events = reader_->ReadAfter(cursor, static_cast<int>(std::min<size_t>(room, 1000)));
      if (!events.ok()) {
        LogWarning("WatchEvents: reading the event log failed (retrying): ", events.status().message());
        continue;
      }
      const bool full = events->size() == std::min<size_t>(room, 1000);
      w->Add(*std::move(events), full);
    }
    all.clear();
    lock.lock();
    cv_.wait_for(lock, absl::ToChronoMicroseconds(options_.poll_interval), [&] { return stopping_ || wake_; });
    wake_ = false;
  }
}

}  // namespace linesign::service
