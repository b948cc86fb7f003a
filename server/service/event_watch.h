// EventWatchers: the WatchEvents streams (issue 11). Each stream is a write reactor that sends the event log from
// its cursor on, one message at a time; one thread of the hub polls the store (EventReader::ReadAfter, on the
// store's read connection) every poll_interval for every stream that has room, so a stream never waits on a gRPC
// callback thread and the number of threads does not grow with the streams. The number of streams is bounded
// (max_watchers): one more is refused RESOURCE_EXHAUSTED.
//
// Order and resumption: events are sent in cursor order, each with its cursor; a stream holds at most
// kMaxBuffered events read and not yet written, and reads more only when it has room, so a watcher that stops
// reading costs a bounded amount of memory and never loses its place. After a reconnect (or a server restart:
// the cursor is the event's id in the store) after_cursor = the last cursor received continues exactly there.
#ifndef LINESIGN_SERVER_SERVICE_EVENT_WATCH_H_
#define LINESIGN_SERVER_SERVICE_EVENT_WATCH_H_

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "linesign/v1/admin.pb.h"
#include "server/store/event_log.h"

namespace linesign::service {

class EventWatchers {
 public:
  static constexpr size_t kMaxBuffered = 256;

  struct Options {
    size_t max_watchers = 16;
    absl::Duration poll_interval = absl::Milliseconds(200);
  };
  // `reader` is borrowed and must outlive the hub. The hub must outlive every stream it opened (destroy it after
  // the gRPC server has been waited for).
  EventWatchers(store::EventReader* reader, Options options);
  ~EventWatchers();
  EventWatchers(const EventWatchers&) = delete;
  EventWatchers& operator=(const EventWatchers&) = delete;

  // Open starts a stream of the events after `after_cursor`; `on_end` is called once with the stream's final
  // status (for counting and audit). ResourceExhausted when max_watchers streams are open, Unavailable after
  // Stop, InvalidArgument for a negative cursor.
  // With `stop_at_end` the stream ends OK once a read finds nothing more after what it has sent.
  absl::StatusOr<grpc::ServerWriteReactor<v1::WatchEventsResponse>*> Open(
      int64_t after_cursor, bool stop_at_end, std::function<void(const grpc::Status&)> on_end);

  // Stop refuses new streams and ends every open one UNAVAILABLE, naming the cursor to resume from (the last
  // one that stream sent), as soon as its write in flight (if any) is done. Idempotent.
  void Stop();

  // open returns the streams open now.
  size_t open() const;

 private:
  class Watcher;
  void Loop();
  void Closed();
  // Wake has the hub poll at once (a stream opened, or one emptied its buffer after a full read).
  void Wake();

  store::EventReader* const reader_;  // borrowed
  const Options options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<Watcher>> watchers_;  // guarded by mu_
  size_t open_ = 0;                                // guarded by mu_; streams whose OnDone has not run
  bool stopped_ = false;                           // guarded by mu_; Stop was called
  bool stopping_ = false;                          // guarded by mu_; the destructor ends the thread
  bool wake_ = false;                              // guarded by mu_; poll now rather than after the interval
  std::thread thread_;
};

}  // namespace linesign::service

#endif  // LINESIGN_SERVER_SERVICE_EVENT_WATCH_H_
