// WebhookSender: the event webhook (issue 11, README "The event webhook"). A background task that follows the
// event log by cursor, as WatchEvents does, and POSTs each event as one JSON object to the configured URL, in log
// order, moving on only after a 2xx. Nothing on the issuing path knows about it: its only state is a delivery
// cursor in the store (store::CursorStore), advanced after each acknowledged event.
//
// Guarantees: every event is delivered at least once and in log order (so in order per certificate). A failure
// (no connection, timeout, any non-2xx) retries the same event after a pause drawn at random below a bound that
// starts at kInitialBackoff and doubles up to max_backoff ("full jitter": many servers do not retry in step). A
// 4xx other than 408/429 is retried too (losing an event is worse than a noisy log) and reported with its status.
// Duplicates arise only for the event in flight: one acknowledged whose cursor was not stored yet when the server
// stopped or lost its lease, or whose answer came after the timeout.
//
// Several servers on one database: the cursor is held under a lease (3 x timeout, at least 10 s), renewed as the
// holder goes; only the holder delivers; another takes over when the holder releases it (OnStop) or stops
// renewing it. Pacing and leases use `clock`, real time by default (not the server's injected clock, which moves
// certificates' time in tests; a lease is compared across processes).
#ifndef LINESIGN_SERVER_LIFECYCLE_WEBHOOK_H_
#define LINESIGN_SERVER_LIFECYCLE_WEBHOOK_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "server/lifecycle/webhook_url.h"
#include "server/store/cursor_store.h"
#include "server/store/event_log.h"
#include "server/tasks/background_task.h"

namespace httplib {
class Client;
}

namespace linesign::lifecycle {

class WebhookSender final : public tasks::BackgroundTask {
 public:
  static constexpr absl::Duration kInitialBackoff = absl::Milliseconds(100);
  static constexpr int kReadBatch = 100;  // events read per round; a round ends after them or at a failure
  static constexpr char kCursorName[] = "webhook";

  struct Options {
    std::string url;                  // validated as events.webhook.url
    absl::Duration timeout = absl::Seconds(5);          // connect, send and answer, each
    absl::Duration max_backoff = absl::Seconds(60);
    std::string secret_file;          // "" for unsigned requests
    std::string owner;                // names this process in the lease (host:pid:webhook); required
    absl::Duration interval = absl::Milliseconds(200);  // how often an idle sender looks for new events
    const Clock* clock = nullptr;     // borrowed; nullptr for real time
    std::function<double()> uniform;  // draws in [0, 1) for the jitter; empty for a seeded PRNG
  };

  // Create checks the options and reads the secret: InvalidArgument naming the field (events.webhook.url,
  // .secret_file) for a bad URL, an unreadable or empty secret file. `reader` and `cursors` are borrowed and
  // must outlive the task.
  static absl::StatusOr<std::unique_ptr<WebhookSender>> Create(store::EventReader* reader,
                                                               store::CursorStore* cursors, Options options);
  ~WebhookSender() override;

  std::string_view name() const override { return "webhook"; }
  absl::Duration interval() const override { return options_.interval; }
  // RunOnce takes (or renews) the lease and, when it holds it and no pause is running, delivers up to
  // kReadBatch events after the stored cursor (fewer when the answers took more than `timeout` in all). A failed delivery is returned (the runner logs it, rate-limited)
  // after the pause before its retry is set. The runner's first round, on the server's starting thread, only
  // returns: a slow receiver must not hold up the start. `now` is not used (see `clock`).
  absl::Status RunOnce(absl::Time now) override;
  // OnStop releases the lease, so another server continues at once.
  void OnStop() override;

  // Body is the JSON object POSTed for `event`: cursor, type, serial_hex, station, profile, time (RFC 3339, UTC)
  // and data (the event's JSON, or a string when it is not JSON; null when empty).
  static std::string Body(const store::Event& event);
  // Signature is "sha256=" + hex HMAC-SHA256(secret, body), the X-Linesign-Signature header.
  static std::string Signature(const std::string& secret, const std::string& body);
  // Backoff is the pause before retry number `failures` (1 for the first): u * min(max, kInitialBackoff *
  // 2^(failures - 1)), u in [0, 1).
  static absl::Duration Backoff(int failures, absl::Duration max, double u);

  // For metrics (any thread): events acknowledged, failed attempts, the stored cursor as this process last knew
  // it, and the events read after it not yet delivered (at most kReadBatch).
  int64_t delivered() const { return delivered_.load(); }
  int64_t failed() const { return failed_.load(); }
  int64_t cursor() const { return cursor_.load(); }
  int64_t lag() const { return lag_.load(); }

 private:
  WebhookSender(store::EventReader* reader, store::CursorStore* cursors, Options options, WebhookUrl url,
                std::string secret);
  absl::Status Post(const store::Event& event);

  store::EventReader* const reader_;    // borrowed
  store::CursorStore* const cursors_;   // borrowed
  const Options options_;
  const WebhookUrl url_;
  const std::string secret_;            // never logged
  const absl::Duration lease_;
  std::unique_ptr<httplib::Client> client_;
  std::function<double()> uniform_;
  // The task's own state (RunOnce runs on one thread at a time).
  bool first_round_ = true;
  bool held_ = false;
  absl::Time lease_until_ = absl::InfinitePast();
  absl::Time next_take_ = absl::InfinitePast();     // when a process without the lease asks again
  absl::Time next_attempt_ = absl::InfinitePast();  // the end of the pause after a failure
  int streak_ = 0;                                  // failures in a row of the event in hand
  std::atomic<int64_t> delivered_{0};
  std::atomic<int64_t> failed_{0};
  std::atomic<int64_t> cursor_{0};
  std::atomic<int64_t> lag_{0};
};

}  // namespace linesign::lifecycle

#endif  // LINESIGN_SERVER_LIFECYCLE_WEBHOOK_H_
