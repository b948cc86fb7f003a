// metrics: a small registry of counters, gauges and histograms with labels, rendered in the Prometheus text
// exposition format (version 0.0.4) for the HTTP listener's /metrics.
//
// Why not prometheus-cpp (Debian 12 has prometheus-cpp-dev 1.0.1): its Family::Add hashes a std::map of labels
// under a mutex on every lookup, and labelled counters on the issuing path (certificates by profile and station)
// would take that mutex per certificate. Here every update is an atomic add; a family's label sets live in a
// fixed-size lock-free table (found by hash, inserted by compare-and-swap, never removed), so a station seen
// before costs a hash and a compare, and a new one an allocation. Callback metrics (queue depth, health, the
// store's backlog) are read only at scrape time.
//
// Names and units follow the Prometheus conventions (`linesign_` prefix, `_total` for counters, base units such as
// `_seconds` and `_bytes`); `promtool check metrics` is run on a live server's output by the tests.
#ifndef LINESIGN_SERVER_OBSERVABILITY_METRICS_H_
#define LINESIGN_SERVER_OBSERVABILITY_METRICS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/types/span.h"

namespace linesign::metrics {

// Counter only goes up.
class Counter {
 public:
  void Add(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// Gauge is a value that goes up and down.
class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double v) { value_.fetch_add(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Histogram counts observations into cumulative buckets (upper bounds given at construction, ascending; +Inf is
// implied) and keeps their sum.
class Histogram {
 public:
  explicit Histogram(const std::vector<double>* bounds)
      : bounds_(bounds), buckets_(new std::atomic<uint64_t>[bounds->size() + 1]()) {}
  void Observe(double v);
  // Snapshot returns the per-bucket (not cumulative) counts, the last for +Inf, and the sum.
  std::vector<uint64_t> Counts() const;
  double sum() const { return sum_.load(std::memory_order_relaxed); }
  const std::vector<double>& bounds() const { return *bounds_; }

 private:
  const std::vector<double>* bounds_;  // owned by the family
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<double> sum_{0};
};

// Bucket sets in base units.
std::vector<double> LatencyBuckets();    // 100 µs .. 10 s, seconds
std::vector<double> BatchSizeBuckets();  // 1 .. 1024

enum class Type { kCounter, kGauge, kHistogram };

// Family is one metric name with a fixed list of label names; each distinct list of label values has its own T.
// Get is lock-free and safe from any thread. A family holds at most `capacity` label sets; past that, new ones
// share one cell whose every label value is "_other" (a bounded number of series, whatever the stations send).
template <typename T>
class Family {
 public:
  // Get returns the metric for `values` (as many as label names), creating it on first use. Never null.
  T* Get(absl::Span<const std::string_view> values);
  T* Get(std::initializer_list<std::string_view> values) {
    return Get(absl::Span<const std::string_view>(values.begin(), values.size()));
  }
  // ForEach calls f(label values, metric) for every label set created so far (not on a hot path).
  template <typename F>
  void ForEach(F f) const {
    for (size_t i = 0; i < capacity_; ++i) {
      if (const Cell* c = slots_[i].load(std::memory_order_acquire)) f(c->values, c->metric);
    }
  }

 private:
  friend class Registry;
  struct Cell {
    std::vector<std::string> values;
    T metric;
    template <typename... A>
    explicit Cell(std::vector<std::string> v, A&&... a) : values(std::move(v)), metric(std::forward<A>(a)...) {}
  };
  Family(std::vector<std::string> label_names, size_t capacity, std::vector<double> bounds);
  ~Family();
  Cell* NewCell(absl::Span<const std::string_view> values);

  const std::vector<std::string> label_names_;
  const std::vector<double> bounds_;  // histograms only
  const size_t capacity_;
  std::unique_ptr<std::atomic<Cell*>[]> slots_;
  std::unique_ptr<Cell> overflow_;
};

// Emit is what a callback metric calls once per sample: its label values (as many as label names) and value.
using Emit = std::function<void(std::initializer_list<std::string_view> values, double value)>;

class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Add* register a family (at start-up; not on a hot path) and return it, owned by the registry. `name` must be
  // unique; `help` one line.
  Family<Counter>* AddCounter(std::string name, std::string help, std::vector<std::string> labels = {},
                              size_t capacity = 1024);
  Family<Gauge>* AddGauge(std::string name, std::string help, std::vector<std::string> labels = {},
                          size_t capacity = 1024);
  Family<Histogram>* AddHistogram(std::string name, std::string help, std::vector<std::string> labels,
                                  std::vector<double> bounds, size_t capacity = 64);
  // AddCallback registers a metric whose samples `collect` produces at each scrape, by calling its argument
  // once per sample. `collect` runs on the HTTP thread and must be quick and thread-safe.
  void AddCallback(std::string name, std::string help, Type type, std::vector<std::string> labels,
                   std::function<void(const Emit&)> collect);

  // Render returns every metric in the text exposition format, in registration order.
  std::string Render() const;

 private:
  struct Entry;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Entry>> entries_;  // guarded by mu_
};

// EscapeLabelValue escapes `\`, `"` and a newline, and makes the value valid UTF-8.
std::string EscapeLabelValue(std::string_view v);
// FormatValue renders a sample value as Prometheus reads it (integers exactly, "+Inf", "NaN").
std::string FormatValue(double v);

}  // namespace linesign::metrics

#endif  // LINESIGN_SERVER_OBSERVABILITY_METRICS_H_
