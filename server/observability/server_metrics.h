// ServerMetrics: every metric linesign-server exposes on /metrics, and the decorators and observers that feed them
// from outside the parts they watch:
//   MeteredSigner          around the CA key's hsm::Signer        HSM signature latency, errors, signatures in progress
//   MeteredIssuanceStore   around the batch signer's store        certificates issued by profile and station, batch
//                                                                 size, commit latency and failures
//   BatchSigner::Observer  (this class)                           request latency, unary and stream
//   RpcCounters::Observer  (this class)                           refusals by RPC, code and reason class
//   callbacks at scrape    queue depth, answers by RPC and code (RpcCounters), health, build info, process
//   StoreStatsTask         a background task                      outbox backlog and age by kind, expiry distribution
// Other components add their own gauges through registry()->AddCallback (the CRL's age, the renewal backlog).
// README "Metrics" lists every name.
#ifndef LINESIGN_SERVER_OBSERVABILITY_SERVER_METRICS_H_
#define LINESIGN_SERVER_OBSERVABILITY_SERVER_METRICS_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "hsm/signer.h"
#include "server/issuance/batch_signer.h"
#include "server/observability/health_monitor.h"
#include "server/observability/metrics.h"
#include "server/service/rpc_counters.h"
#include "server/store/store.h"
#include "server/tasks/background_task.h"

namespace linesign::observability {

// RefusalReason names the class of a refusal or failure for the metrics' `reason` label, from its code and
// message: a few fixed words, so the label's values stay bounded whatever a station sends ("authentication",
// "authorization", "rate_limit", "queue_full", "stream_limit", "csr", "subject", "san", "key", "request",
// "request_id_reused", "draining", "store", "hsm", "other").
std::string_view RefusalReason(grpc::StatusCode code, std::string_view message);

class ServerMetrics final : public issuance::BatchSigner::Observer, public service::RpcCounters::Observer {
 public:
  ServerMetrics();
  ~ServerMetrics() override;

  metrics::Registry* registry() { return &registry_; }

  // MeterSigner returns a signer that signs with `inner` (borrowed, must outlive it) and is measured.
  std::unique_ptr<hsm::Signer> MeterSigner(const hsm::Signer* inner);
  // MeterStore returns an IssuanceStore that records through `inner` (borrowed, must outlive it) and is measured.
  std::unique_ptr<store::IssuanceStore> MeterStore(store::IssuanceStore* inner);

  // WatchQueue exposes `queued()` as the signing queue's depth.
  void WatchQueue(std::function<size_t()> queued);
  // WatchRpcCounters exposes the counters' answers by RPC and code (borrowed; must outlive this).
  void WatchRpcCounters(const service::RpcCounters* counters);
  // WatchHealth exposes the monitor's verdict (borrowed; must outlive this).
  void WatchHealth(const HealthMonitor* monitor);
  // StoreStatsTask returns the background task that reads `store`'s outbox backlog every `interval` and its expiry
  // distribution every kExpiryEvery into gauges (borrowed store; the task must stop before the store closes).
  std::unique_ptr<tasks::BackgroundTask> StoreStatsTask(store::Store* store, absl::Duration interval);
  static constexpr absl::Duration kExpiryEvery = absl::Minutes(5);

  // BatchSigner::Observer
  void OnAnswered(issuance::BatchSigner::Admission admission, absl::Duration elapsed,
                  const absl::Status& status) override;
  // RpcCounters::Observer
  void OnDecision(service::Rpc rpc, grpc::StatusCode code, std::string_view identity, std::string_view outcome,
                  const absl::Status& why) override;

  // StatusJson renders what the status page shows (status_page.h), read now: totals, per-station counts and
  // refusals, refusals by reason, the latency histogram's buckets (the page computes percentiles over its own
  // window), queue depth, health and the outbox.
  std::string StatusJson(const HealthMonitor* health);
  // AddStatusValue adds a number other components own to StatusJson's "values", under `key`, read at each call
  // (nullopt: null), e.g. the CRL's age. Call before the HTTP listener serves.
  void AddStatusValue(std::string key, std::function<std::optional<double>()> read);

  // The expiry distribution's bounds, in days.
  static const std::vector<int>& ExpiryBoundDays();

 private:
  class StoreStats;
  metrics::Registry registry_;
  metrics::Histogram* unary_latency_;
  metrics::Histogram* stream_latency_;
  metrics::Family<metrics::Counter>* refusals_;
  metrics::Family<metrics::Counter>* station_refusals_;
  std::function<size_t()> queued_;
  metrics::Family<metrics::Counter>* replayed_;
  metrics::Histogram* hsm_latency_;
  metrics::Family<metrics::Counter>* hsm_errors_;
  metrics::Gauge* hsm_in_progress_;
  metrics::Family<metrics::Counter>* issued_;
  metrics::Histogram* batch_size_;
  metrics::Histogram* commit_latency_;
  metrics::Counter* commit_failures_;
  std::shared_ptr<StoreStats> store_stats_;
  std::vector<std::pair<std::string, std::function<std::optional<double>()>>> status_values_;
};

}  // namespace linesign::observability

#endif  // LINESIGN_SERVER_OBSERVABILITY_SERVER_METRICS_H_
