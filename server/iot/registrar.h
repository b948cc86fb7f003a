// The AWS IoT device registrar (issue 10): a background task of the server that drains the outbox's
// iot.register items. Each item is one certificate and one target; its registration runs as the resumable step
// machine of device_registration.h (register → create thing → attach principal → attach policy), the progress
// saved in the store after every step by the holder of the item's lease only, so a restart (or another replica
// taking over an expired lease) repeats no completed step and skips none.
//
// Rate: every AWS call first takes a token from its target's bucket for that operation (AdaptiveRate, ceiling
// iot.targets[].rates); a ThrottlingException cuts that operation's rate. Up to max_in_flight registrations are
// worked on at once, one thread each, so the bottleneck operation (RegisterCertificate, 9/s by default) keeps
// its rate while each call takes 100 ms or more.
//
// Outcomes: registered → state registered + IOT_REGISTERED; a permanent error (aws_error.h's classification, or
// linesign's own: unknown target, bad thing name) → state failed with the error code and message + IOT_FAILED,
// the item completed; each of those is one transaction with the item's completion. A retryable error (throttling,
// 5xx, timeout, no connection) reschedules the item after a random delay in [0, min(retry_max, retry_base *
// 2^(failures-1))] (full jitter) and leaves it pending.
#ifndef LINESIGN_SERVER_IOT_REGISTRAR_H_
#define LINESIGN_SERVER_IOT_REGISTRAR_H_

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "server/iot/adaptive_rate.h"
#include "server/iot/device_registration.h"
#include "server/iot/iot_client.h"
#include "server/iot/registrar_watch.h"
#include "server/observability/metrics.h"
#include "server/profile/profile.h"
#include "server/store/certificate_store.h"
#include "server/store/iot_registration_store.h"
#include "server/store/outbox.h"
#include "server/tasks/background_task.h"

namespace linesign::iot {

// GovernedIotApi is an IotApi that, before each call of `inner`, waits for a token of that operation's
// AdaptiveRate, and after it reports the outcome to the bucket (ThrottlingException cuts the rate, success lets
// it grow back) and to `observer` (metrics). A wait ends early with Unavailable ("registrar stopping", retryable)
// once `stopping` is set. Thread-safe. `inner`, `clock` and `stopping` are borrowed.
// ScopedBeforeCall installs, for the calling thread and its lifetime, a check that GovernedIotApi runs after a
// call's token is granted and before the call is sent: the registrar renews an item's lease there, so a long
// wait for a slow bucket never ends in a call made on a lease another runner has taken meanwhile. A failing
// check cancels the call with its status (the token is spent).
class ScopedBeforeCall {
 public:
  explicit ScopedBeforeCall(std::function<absl::Status()> check);
  ~ScopedBeforeCall();
  ScopedBeforeCall(const ScopedBeforeCall&) = delete;
  ScopedBeforeCall& operator=(const ScopedBeforeCall&) = delete;

 private:
  std::function<absl::Status()> check_;
  std::function<absl::Status()>* previous_;
};

class GovernedIotApi final : public IotApi {
 public:
  // Observer sees each call's operation name (RegisterCertificate, ...) and status; quick and thread-safe.
  using Observer = std::function<void(std::string_view operation, const absl::Status& status)>;
  GovernedIotApi(const IotApi* inner, const std::map<std::string, double>& rates, const Clock* clock,
                 Observer observer, const std::atomic<bool>* stopping);

  absl::StatusOr<std::string> GetRegistrationCode() const override;
  absl::StatusOr<RegisteredCertificate> RegisterCaCertificate(const RegisterCaCertificateRequest& r) const override;
  absl::Status UpdateCaCertificate(absl::string_view ca_certificate_id, std::optional<std::string> new_status,
                                   std::optional<std::string> new_auto_registration_status) const override;
  absl::StatusOr<CaCertificateDescription> DescribeCaCertificate(absl::string_view id) const override;
  absl::StatusOr<RegisteredCertificate> RegisterCertificate(absl::string_view certificate_pem,
                                                            absl::string_view ca_certificate_pem,
                                                            absl::string_view status) const override;
  absl::StatusOr<RegisteredCertificate> RegisterCertificateWithoutCa(absl::string_view certificate_pem,
                                                                     absl::string_view status) const override;
  absl::StatusOr<Thing> CreateThing(absl::string_view thing_name,
                                    const std::map<std::string, std::string>& attributes) const override;
  absl::Status AttachThingPrincipal(absl::string_view thing_name, absl::string_view principal_arn) const override;
  absl::Status AttachPolicy(absl::string_view policy_name, absl::string_view target_arn) const override;
  absl::StatusOr<CertificateDescription> DescribeCertificate(absl::string_view certificate_id) const override;

  // rates returns each operation's bucket (for the metrics: current rate, throttles).
  const std::map<std::string, std::unique_ptr<AdaptiveRate>>& rates() const { return rates_; }

 private:
  // Acquire waits for a token of `operation` (none configured: no wait).
  absl::Status Acquire(const char* operation) const;
  void Report(const char* operation, const absl::Status& status) const;
  template <typename F>
  auto Call(const char* operation, F&& call) const -> decltype(call());

  const IotApi* const inner_;
  std::map<std::string, std::unique_ptr<AdaptiveRate>> rates_;  // fixed after construction
  const Clock* const clock_;
  const Observer observer_;
  const std::atomic<bool>* const stopping_;
};

class Registrar final : public tasks::BackgroundTask {
 public:
  // Target is one configured AWS IoT target: its client (or why there is none) and its rates per operation.
  struct Target {
    std::string name;
    absl::StatusOr<const IotApi*> api;  // borrowed; an error when it could not be resolved at start-up
    std::map<std::string, double> rates;
  };
  // Everything borrowed must outlive the registrar.
  struct Parts {
    std::string issuer_id;           // the issuing CA's: the items of other issuers are left alone
    std::string ca_certificate_pem;  // sent with RegisterCertificate (register: with_ca)
    store::IotRegistrationStore* store;  // borrowed
    store::Outbox* outbox;               // borrowed
    store::CertificateReader* reader;    // borrowed
    const profile::Profiles* profiles;   // borrowed
    std::vector<Target> targets;
    const Clock* clock;                  // borrowed
    metrics::Registry* metrics = nullptr;  // borrowed, optional: the registrar adds its metrics there
    RegistrationWatch* watch = nullptr;    // borrowed, optional: told of every registration that ends
  };
  struct Options {
    std::string owner;                         // the lease owner: names this process; required
    int max_in_flight = 32;                    // 1 to 1024
    absl::Duration lease = absl::Minutes(2);
    absl::Duration interval = absl::Milliseconds(200);
    absl::Duration retry_base = absl::Seconds(1);
    absl::Duration retry_max = absl::Minutes(5);
  };

  // Create starts the worker threads. InvalidArgument for options out of range or a missing part.
  static absl::StatusOr<std::unique_ptr<Registrar>> Create(Parts parts, Options options);
  ~Registrar() override;

  std::string_view name() const override { return "iot-registrar"; }
  absl::Duration interval() const override { return options_.interval; }
  // RunOnce claims as many due iot.register items as there are idle workers (repeatedly while claims come back
  // full) and hands them to the workers; it does not wait for them.
  absl::Status RunOnce(absl::Time now) override;
  // OnStop stops the workers: each finishes the step it is in; items not started are released at once (due
  // now) for another replica or the next start.
  void OnStop() override;

  int64_t registered() const { return registered_.load(); }
  int64_t failed() const { return failed_.load(); }

 private:
  struct TargetState {
    std::string name;
    absl::Status unusable;  // OK when `api` is set
    std::unique_ptr<GovernedIotApi> api;
  };

  Registrar(Parts parts, Options options);
  void Worker();
  // Process runs one claimed item to its end, a retry, or a lost lease.
  void Process(const store::OutboxItem& item);
  absl::Time Backoff(int failures, absl::Time now);
  void AddMetrics();

  Parts p_;
  const Options options_;
  std::map<std::string, TargetState> targets_;  // fixed after Create
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<store::OutboxItem> queue_;  // claimed, not started; guarded by mu_
  // Items queued or being processed here. A claim can return one of them again (its lease ran out while a worker
  // waited for a slow bucket; the claim renewed it under the same owner): it is not handed to a second worker.
  std::set<int64_t> active_;              // guarded by mu_
  int busy_ = 0;                          // items being processed; guarded by mu_
  bool stopped_ = false;                  // guarded by mu_
  std::vector<std::thread> workers_;
  std::atomic<int64_t> registered_{0}, failed_{0};
  // Metrics (null without a registry).
  metrics::Family<metrics::Counter>* calls_ = nullptr;          // {target, operation, outcome}
  metrics::Family<metrics::Counter>* throttles_ = nullptr;      // {target, operation}
  metrics::Family<metrics::Counter>* outcomes_ = nullptr;       // {target, outcome}
  metrics::Family<metrics::Counter>* retries_ = nullptr;        // {target}
};

}  // namespace linesign::iot

#endif  // LINESIGN_SERVER_IOT_REGISTRAR_H_
