#include "server/observability/server_metrics.h"

#include <dirent.h>
#include <grpcpp/grpcpp.h>
#include <openssl/crypto.h>
#include <sqlite3.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/openssl_util.h"
#include "common/utf8.h"
#include "nlohmann/json.hpp"

#ifndef LINESIGN_VERSION
#define LINESIGN_VERSION "unknown"
#endif

namespace linesign::observability {
namespace {

double Seconds(std::chrono::steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }

class MeteredSigner final : public hsm::Signer {
 public:
  MeteredSigner(const hsm::Signer* inner, metrics::Histogram* latency, metrics::Family<metrics::Counter>* errors,
                metrics::Gauge* in_progress)
      : inner_(inner), latency_(latency), errors_(errors), in_progress_(in_progress) {}

  absl::StatusOr<std::string> Sign(absl::string_view message) const override {
    in_progress_->Add(1);
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<std::string> sig = inner_->Sign(message);
    latency_->Observe(Seconds(std::chrono::steady_clock::now() - start));
    in_progress_->Add(-1);
    if (!sig.ok()) errors_->Get({StatusCodeName(static_cast<int>(sig.status().code()))})->Add();
    return sig;
  }
  hsm::SignatureAlgorithm algorithm() const override { return inner_->algorithm(); }
  std::string description() const override { return inner_->description(); }

 private:
  const hsm::Signer* const inner_;
  metrics::Histogram* const latency_;
  metrics::Family<metrics::Counter>* const errors_;
  metrics::Gauge* const in_progress_;
};

class MeteredIssuanceStore final : public store::IssuanceStore {
 public:
  MeteredIssuanceStore(store::IssuanceStore* inner, metrics::Family<metrics::Counter>* issued,
                       metrics::Histogram* batch_size, metrics::Histogram* latency, metrics::Counter* failures)
      : inner_(inner), issued_(issued), batch_size_(batch_size), latency_(latency), failures_(failures) {}

  absl::StatusOr<std::vector<store::RecordOutcome>> RecordBatch(const store::Batch& batch) override {
    const auto start = std::chrono::steady_clock::now();
    auto outcomes = inner_->RecordBatch(batch);
    latency_->Observe(Seconds(std::chrono::steady_clock::now() - start));
    if (!outcomes.ok()) {
      failures_->Add();
      return outcomes;
    }
    batch_size_->Observe(static_cast<double>(batch.entries.size()));
    // Consecutive certificates of a batch mostly share their profile and station: one look-up per run of them.
    metrics::Counter* counter = nullptr;
    const store::CertificateRecord* last = nullptr;
    for (size_t i = 0; i < outcomes->size() && i < batch.entries.size(); ++i) {
      if ((*outcomes)[i] != store::RecordOutcome::kRecorded) continue;
      const store::CertificateRecord& r = batch.entries[i].cert;
      if (last == nullptr || last->profile != r.profile || last->station != r.station) {
        counter = issued_->Get({r.profile, r.station});
        last = &r;
      }
      counter->Add();
    }
    return outcomes;
  }
  absl::StatusOr<std::optional<store::CertificateRecord>> FindByRequest(const std::string& station,
                                                                        const std::string& request_id) override {
    return inner_->FindByRequest(station, request_id);
  }

 private:
  store::IssuanceStore* const inner_;
  metrics::Family<metrics::Counter>* const issued_;
  metrics::Histogram* const batch_size_;
  metrics::Histogram* const latency_;
  metrics::Counter* const failures_;
};

// ProcessStat reads this process's RSS (bytes), CPU time (seconds) and start time (Unix seconds) from /proc.
struct ProcessStat {
  double rss_bytes = 0, cpu_seconds = 0, start_time = -1;  // -1: unknown (/proc/stat hidden, e.g. ProcSubset=pid)
};
ProcessStat ReadProcessStat() {
  ProcessStat p;
  std::ifstream in("/proc/self/stat");
  std::string line;
  if (!std::getline(in, line)) return p;
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return p;
  std::istringstream fields(line.substr(close + 2));
  std::vector<std::string> f;
  std::string x;
  while (fields >> x) f.push_back(x);
  // After the command: field 3 is f[0]; utime 14, stime 15, starttime 22, rss 24 (pages).
  if (f.size() < 22) return p;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  p.cpu_seconds = (std::stod(f[11]) + std::stod(f[12])) / ticks;
  p.rss_bytes = std::stod(f[21]) * static_cast<double>(sysconf(_SC_PAGESIZE));
  std::ifstream up("/proc/stat");
  while (std::getline(up, line)) {
    if (absl::StartsWith(line, "btime ")) {
      p.start_time = std::stod(line.substr(6)) + std::stod(f[19]) / ticks;
      break;
    }
  }
  return p;
}

double OpenFds() {
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return 0;
  double n = 0;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(d);
  return n - 1;  // the directory itself
}

}  // namespace

std::string_view RefusalReason(grpc::StatusCode code, std::string_view message) {
  const absl::string_view m(message.data(), message.size());
  switch (code) {
    case grpc::StatusCode::UNAUTHENTICATED:
      return "authentication";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "authorization";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "request_id_reused";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      if (absl::StrContains(m, "rate limit")) return "rate_limit";
      if (absl::StrContains(m, "queue is full")) return "queue_full";
      if (absl::StrContains(m, "stream")) return "stream_limit";
      return "other";
    case grpc::StatusCode::INVALID_ARGUMENT:
      if (absl::StartsWith(m, "subjectAltName") || absl::StartsWith(m, "CSR subjectAltName")) return "san";
      if (absl::StartsWith(m, "subject") || absl::StartsWith(m, "CSR subject")) return "subject";
      if (absl::StrContains(m, "public key") || absl::StrContains(m, "key of ") ||
          absl::StrContains(m, "key type") || absl::StrContains(m, "public exponent")) {
        return "key";
      }
      if (absl::StartsWith(m, "CSR")) return "csr";
      if (absl::StartsWith(m, "request_id") || absl::StartsWith(m, "profile") ||
          absl::StartsWith(m, "the request") || absl::StrContains(m, "not valid UTF-8")) {
        return "request";
      }
      return "other";
    case grpc::StatusCode::UNAVAILABLE:
      if (absl::StrContains(m, "shutting down")) return "draining";
      if (absl::StrContains(m, "store") || absl::StrContains(m, "database")) return "store";
      if (absl::StrContains(m, "C_") || absl::StrContains(m, "hsm") || absl::StrContains(m, "CKR_")) return "hsm";
      return "other";
    default:
      return "other";
  }
}

const std::vector<int>& ServerMetrics::ExpiryBoundDays() {
  static const std::vector<int> kDays = {1, 7, 30, 60, 90, 365};
  return kDays;
}

// StoreStats keeps the last numbers the StoreStatsTask read; scrapes render them.
class ServerMetrics::StoreStats {
 public:
  void Set(store::StoreStats s, absl::Time now) {
    std::lock_guard<std::mutex> lock(mu_);
    stats_ = std::move(s);
    read_at_ = now;
    have_ = true;
  }
  template <typename F>
  void With(F f) const {
    std::lock_guard<std::mutex> lock(mu_);
    if (have_) f(stats_, read_at_);
  }

 private:
  mutable std::mutex mu_;
  store::StoreStats stats_;  // guarded by mu_
  absl::Time read_at_;       // guarded by mu_
  bool have_ = false;        // guarded by mu_
};

namespace {
class StatsTask final : public tasks::BackgroundTask {
 public:
  StatsTask(store::Store* store, absl::Duration interval, std::function<void(store::StoreStats, absl::Time)> set)
      : store_(store), interval_(interval), set_(std::move(set)) {}
  std::string_view name() const override { return "metrics-store-stats"; }
  absl::Duration interval() const override { return interval_; }
  // The outbox backlog is read every run; the expiry distribution, a pass over every unexpired certificate's
  // notAfter (seconds on a store of ten million, on every replica), only every kExpiryEvery: it moves by days.
  absl::Status RunOnce(absl::Time now) override {
    const bool expiry_due = !expiry_read_at_.has_value() || now - *expiry_read_at_ >= ServerMetrics::kExpiryEvery ||
                            now < *expiry_read_at_;
    std::vector<absl::Duration> bounds;
    if (expiry_due) {
      for (int d : ServerMetrics::ExpiryBoundDays()) bounds.push_back(absl::Hours(24) * d);
    }
    auto stats = store_->Stats(now, bounds);
    if (!stats.ok()) return stats.status();
    if (expiry_due) {
      expiry_read_at_ = now;
      expiring_ = stats->expiring;
      unexpired_ = stats->unexpired;
    } else {
      stats->expiring = expiring_;
      stats->unexpired = unexpired_;
    }
    set_(*std::move(stats), now);
    return absl::OkStatus();
  }

 private:
  store::Store* const store_;
  const absl::Duration interval_;
  const std::function<void(store::StoreStats, absl::Time)> set_;
  // The last expiry distribution read (RunOnce runs on the task's one thread).
  std::optional<absl::Time> expiry_read_at_;
  std::vector<int64_t> expiring_;
  int64_t unexpired_ = -1;
};
}  // namespace

ServerMetrics::ServerMetrics() : store_stats_(std::make_shared<StoreStats>()) {
  metrics::Registry& r = registry_;
  r.AddCallback("linesign_build_info", "Build of this linesign-server: version and library versions; always 1.",
                metrics::Type::kGauge, {"version", "grpc", "openssl", "sqlite"}, [](const metrics::Emit& emit) {
                  emit({LINESIGN_VERSION, grpc::Version(), OpenSSL_version(OPENSSL_VERSION_STRING),
                        sqlite3_libversion()},
                       1);
                });
  issued_ = r.AddCounter("linesign_certificates_issued_total",
                         "Certificates recorded durably (and so released), by profile and station. A replay is not "
                         "counted here.",
                         {"profile", "station"});
  replayed_ = r.AddCounter("linesign_certificates_replayed_total",
                           "Retries answered with the certificate already issued for their request id, by RPC.",
                           {"rpc"});
  refusals_ = r.AddCounter("linesign_refusals_total",
                           "Requests refused or failed, by RPC, gRPC code and reason class (README, Metrics).",
                           {"rpc", "code", "reason"});
  station_refusals_ = r.AddCounter("linesign_station_refusals_total",
                                   "Requests refused or failed, by the caller's identity (\"\" when it was not "
                                   "authenticated).",
                                   {"station"});
  auto* latency = r.AddHistogram("linesign_sign_request_duration_seconds",
                                 "Time from a signing request's admission to the signing queue to its answer (queue "
                                 "wait, HSM signature, commit), by path: unary SignCsr or a SignCsrStream request.",
                                 {"path"}, metrics::LatencyBuckets());
  unary_latency_ = latency->Get({"unary"});
  stream_latency_ = latency->Get({"stream"});
  batch_size_ = r.AddHistogram("linesign_batch_size_certificates",
                               "Certificates per committed batch (one store transaction).", {},
                               metrics::BatchSizeBuckets())
                    ->Get({});
  commit_latency_ = r.AddHistogram("linesign_store_commit_duration_seconds",
                                   "Time to record one batch durably (one transaction, synced).", {},
                                   metrics::LatencyBuckets())
                        ->Get({});
  commit_failures_ = r.AddCounter("linesign_store_commit_failures_total",
                                  "Batches whose transaction failed: none of their certificates was released.")
                         ->Get({});
  hsm_latency_ = r.AddHistogram("linesign_hsm_sign_duration_seconds",
                                "Time of one signature by the CA key (PKCS#11 C_SignInit + C_Sign, with any "
                                "session or login recovery).",
                                {}, metrics::LatencyBuckets())
                     ->Get({});
  hsm_errors_ = r.AddCounter("linesign_hsm_sign_errors_total", "Signatures by the CA key that failed, by status code.",
                             {"code"});
  hsm_in_progress_ = r.AddGauge("linesign_hsm_signatures_in_progress",
                                "Signatures being made by the CA key now (HSM sessions in use).")
                         ->Get({});
  r.AddCallback("process_resident_memory_bytes", "Resident memory of linesign-server.", metrics::Type::kGauge, {},
                [](const metrics::Emit& emit) { emit({}, ReadProcessStat().rss_bytes); });
  r.AddCallback("process_cpu_seconds_total", "User and system CPU time of linesign-server.", metrics::Type::kCounter,
                {}, [](const metrics::Emit& emit) { emit({}, ReadProcessStat().cpu_seconds); });
  r.AddCallback("process_start_time_seconds", "Start time of linesign-server, Unix seconds.", metrics::Type::kGauge,
                {}, [](const metrics::Emit& emit) {
                  // Under the systemd unit's ProcSubset=pid, /proc/stat (boot time) is hidden: no sample then.
                  if (const double t = ReadProcessStat().start_time; t >= 0) emit({}, t);
                });
  r.AddCallback("process_open_fds", "Open file descriptors of linesign-server.", metrics::Type::kGauge, {},
                [](const metrics::Emit& emit) { emit({}, OpenFds()); });

  std::shared_ptr<StoreStats> stats = store_stats_;
  r.AddCallback("linesign_outbox_pending_items", "Unfinished outbox items (side effects waiting), by kind.",
                metrics::Type::kGauge, {"kind"}, [stats](const metrics::Emit& emit) {
                  stats->With([&](const store::StoreStats& s, absl::Time) {
                    for (const auto& b : s.outbox) emit({b.kind}, static_cast<double>(b.pending));
                  });
                });
  r.AddCallback("linesign_outbox_oldest_pending_age_seconds",
                "Age of the oldest unfinished outbox item, by kind (at the last store read).", metrics::Type::kGauge,
                {"kind"}, [stats](const metrics::Emit& emit) {
                  stats->With([&](const store::StoreStats& s, absl::Time at) {
                    for (const auto& b : s.outbox) {
                      emit({b.kind}, std::max(0.0, absl::ToDoubleSeconds(at - b.oldest_created)));
                    }
                  });
                });
  r.AddCallback("linesign_certificates_expiring",
                "Recorded certificates not yet expired whose notAfter is within the given number of days "
                "(cumulative; \"+Inf\" counts every unexpired certificate); read from the store every 5 minutes.",
                metrics::Type::kGauge, {"within_days"}, [stats](const metrics::Emit& emit) {
                  stats->With([&](const store::StoreStats& s, absl::Time) {
                    const auto& days = ExpiryBoundDays();
                    for (size_t i = 0; i < days.size() && i < s.expiring.size(); ++i) {
                      emit({absl::StrCat(days[i])}, static_cast<double>(s.expiring[i]));
                    }
                    if (s.unexpired >= 0) emit({"+Inf"}, static_cast<double>(s.unexpired));
                  });
                });
  r.AddCallback("linesign_store_stats_age_seconds",
                "Time since the outbox and expiry figures were read from the store.", metrics::Type::kGauge, {},
                [stats](const metrics::Emit& emit) {
                  stats->With([&](const store::StoreStats&, absl::Time at) {
                    emit({}, std::max(0.0, absl::ToDoubleSeconds(absl::Now() - at)));
                  });
                });
}

ServerMetrics::~ServerMetrics() = default;

std::unique_ptr<hsm::Signer> ServerMetrics::MeterSigner(const hsm::Signer* inner) {
  return std::make_unique<MeteredSigner>(inner, hsm_latency_, hsm_errors_, hsm_in_progress_);
}

std::unique_ptr<store::IssuanceStore> ServerMetrics::MeterStore(store::IssuanceStore* inner) {
  return std::make_unique<MeteredIssuanceStore>(inner, issued_, batch_size_, commit_latency_, commit_failures_);
}

void ServerMetrics::WatchQueue(std::function<size_t()> queued) {
  queued_ = queued;
  registry_.AddCallback("linesign_signing_queue_depth", "Signing requests waiting for a worker.",
                        metrics::Type::kGauge, {}, [queued = std::move(queued)](const metrics::Emit& emit) {
                          emit({}, static_cast<double>(queued()));
                        });
}

void ServerMetrics::WatchRpcCounters(const service::RpcCounters* counters) {
  registry_.AddCallback("linesign_rpc_answers_total",
                        "Answers by RPC and gRPC code (a stream counts each request it answers).",
                        metrics::Type::kCounter, {"rpc", "code"}, [counters](const metrics::Emit& emit) {
                          for (int r = 0; r < static_cast<int>(service::Rpc::kCount); ++r) {
                            for (int c = 0; c < 17; ++c) {
                              const uint64_t n = counters->answered(static_cast<service::Rpc>(r), c);
                              if (n > 0) {
                                emit({service::RpcName(static_cast<service::Rpc>(r)), StatusCodeName(c)},
                                     static_cast<double>(n));
                              }
                            }
                          }
                        });
}

void ServerMetrics::WatchHealth(const HealthMonitor* monitor) {
  registry_.AddCallback("linesign_serving",
                        "1 while health is SERVING (HSM and store usable, not draining), 0 otherwise.",
                        metrics::Type::kGauge, {},
                        [monitor](const metrics::Emit& emit) { emit({}, monitor->serving() ? 1 : 0); });
}

std::unique_ptr<tasks::BackgroundTask> ServerMetrics::StoreStatsTask(store::Store* store, absl::Duration interval) {
  std::shared_ptr<StoreStats> stats = store_stats_;
  return std::make_unique<StatsTask>(
      store, interval, [stats](store::StoreStats s, absl::Time now) { stats->Set(std::move(s), now); });
}

void ServerMetrics::OnAnswered(issuance::BatchSigner::Admission admission, absl::Duration elapsed,
                               const absl::Status& status) {
  (admission == issuance::BatchSigner::Admission::kAlways ? stream_latency_ : unary_latency_)
      ->Observe(absl::ToDoubleSeconds(elapsed));
}

void ServerMetrics::OnDecision(service::Rpc rpc, grpc::StatusCode code, std::string_view identity,
                               std::string_view outcome, const absl::Status& why) {
  if (outcome == "replayed") {
    replayed_->Get({service::RpcName(rpc)})->Add();
  } else if (outcome == "refused" || outcome == "failed") {
    station_refusals_->Get({identity})->Add();
    refusals_->Get({service::RpcName(rpc), StatusCodeName(static_cast<int>(code)), RefusalReason(code, std::string_view(why.message().data(), why.message().size()))})
        ->Add();
  }
}

std::string ServerMetrics::StatusJson(const HealthMonitor* health) {
  nlohmann::json j;
  j["time"] = absl::ToUnixMillis(absl::Now()) / 1000.0;
  j["serving"] = health != nullptr && health->serving();
  j["reason"] = health != nullptr ? health->reason() : "";
  j["queue_depth"] = queued_ ? queued_() : 0;
  j["hsm_in_progress"] = hsm_in_progress_->value();
  uint64_t issued = 0;
  std::map<std::string, std::pair<uint64_t, uint64_t>> by_station;  // issued, refused
  issued_->ForEach([&](const std::vector<std::string>& v, const metrics::Counter& c) {
    issued += c.value();
    by_station[ToValidUtf8(v[1])].first += c.value();
  });
  station_refusals_->ForEach([&](const std::vector<std::string>& v, const metrics::Counter& c) {
    by_station[v[0].empty() ? std::string("(unauthenticated)") : ToValidUtf8(v[0])].second += c.value();
  });
  nlohmann::json stations = nlohmann::json::object();
  for (const auto& [name, n] : by_station) stations[name] = {{"issued", n.first}, {"refused", n.second}};
  j["issued"] = issued;
  j["stations"] = std::move(stations);
  std::map<std::string, uint64_t> reasons;
  refusals_->ForEach([&](const std::vector<std::string>& v, const metrics::Counter& c) { reasons[v[2]] += c.value(); });
  j["refusals_by_reason"] = reasons;
  // Unary and stream requests together: the page shows the latency a station sees.
  std::vector<uint64_t> counts = unary_latency_->Counts();
  const std::vector<uint64_t> stream = stream_latency_->Counts();
  for (size_t i = 0; i < counts.size(); ++i) counts[i] += stream[i];
  j["latency_bounds"] = unary_latency_->bounds();
  j["latency_counts"] = counts;
  nlohmann::json outbox = nlohmann::json::object();
  store_stats_->With([&](const store::StoreStats& s, absl::Time) {
    for (const auto& b : s.outbox) outbox[ToValidUtf8(b.kind)] = b.pending;
  });
  j["outbox"] = std::move(outbox);
  nlohmann::json values = nlohmann::json::object();
  for (const auto& [key, read] : status_values_) {
    std::optional<double> v = read();
    values[key] = v.has_value() ? nlohmann::json(*v) : nlohmann::json(nullptr);
  }
  j["values"] = std::move(values);
  return j.dump();
}

void ServerMetrics::AddStatusValue(std::string key, std::function<std::optional<double>()> read) {
  status_values_.emplace_back(std::move(key), std::move(read));
}

}  // namespace linesign::observability
