#include "server/observability/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <type_traits>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/utf8.h"

namespace linesign::metrics {
namespace {

const char* TypeName(Type t) {
  switch (t) {
    case Type::kCounter:
      return "counter";
    case Type::kGauge:
      return "gauge";
    case Type::kHistogram:
      return "histogram";
  }
  return "untyped";
}

std::string EscapeHelp(std::string_view h) {
  std::string out;
  for (char c : ToValidUtf8(absl::string_view(h.data(), h.size()))) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// LabelText renders {a="x",b="y"} (with `extra`, e.g. le="0.5", last); "" when there are no labels at all.
std::string LabelText(const std::vector<std::string>& names, const std::vector<std::string>& values,
                      std::string_view extra = "") {
  if (names.empty() && extra.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += ",";
    absl::StrAppend(&out, names[i], "=\"", EscapeLabelValue(i < values.size() ? values[i] : ""), "\"");
  }
  if (!extra.empty()) absl::StrAppend(&out, names.empty() ? "" : ",", absl::string_view(extra.data(), extra.size()));
  out += "}";
  return out;
}

size_t HashValues(absl::Span<const std::string_view> values) {
  size_t h = 0;
  for (std::string_view v : values) h = absl::HashOf(h, v);
  return h;
}

bool SameValues(const std::vector<std::string>& a, absl::Span<const std::string_view> b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

}  // namespace

std::string EscapeLabelValue(std::string_view v) {
  std::string out;
  for (char c : ToValidUtf8(absl::string_view(v.data(), v.size()))) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return absl::StrCat(static_cast<int64_t>(v));
  // The shortest of %.15g and %.17g that reads back as `v` (0.1 stays "0.1").
  std::string shorter = absl::StrFormat("%.15g", v);
  if (std::strtod(shorter.c_str(), nullptr) == v) return shorter;
  return absl::StrFormat("%.17g", v);
}

void Histogram::Observe(double v) {
  const std::vector<double>& b = *bounds_;
  // Few buckets: a linear scan is as fast as a binary search and branch-predictable.
  size_t i = 0;
  while (i < b.size() && v > b[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

std::vector<uint64_t> Histogram::Counts() const {
  std::vector<uint64_t> out(bounds_->size() + 1);
  for (size_t i = 0; i < out.size(); ++i) out[i] = buckets_[i].load(std::memory_order_relaxed);
  return out;
}

std::vector<double> LatencyBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

std::vector<double> BatchSizeBuckets() { return {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}; }

template <typename T>
Family<T>::Family(std::vector<std::string> label_names, size_t capacity, std::vector<double> bounds)
    : label_names_(std::move(label_names)),
      bounds_(std::move(bounds)),
      capacity_(std::max<size_t>(1, capacity)),
      slots_(new std::atomic<Cell*>[capacity_]()) {
  std::vector<std::string_view> other(label_names_.size(), "_other");
  overflow_.reset(NewCell(other));
}

template <typename T>
Family<T>::~Family() {
  for (size_t i = 0; i < capacity_; ++i) delete slots_[i].load(std::memory_order_acquire);
}

template <typename T>
typename Family<T>::Cell* Family<T>::NewCell(absl::Span<const std::string_view> values) {
  std::vector<std::string> v(values.begin(), values.end());
  if constexpr (std::is_same_v<T, Histogram>) {
    return new Cell(std::move(v), &bounds_);
  } else {
    return new Cell(std::move(v));
  }
}

template <typename T>
T* Family<T>::Get(absl::Span<const std::string_view> values) {
  const size_t start = HashValues(values) % capacity_;
  Cell* mine = nullptr;
  for (size_t probe = 0; probe < capacity_; ++probe) {
    std::atomic<Cell*>& slot = slots_[(start + probe) % capacity_];
    Cell* c = slot.load(std::memory_order_acquire);
    if (c == nullptr) {
      if (mine == nullptr) mine = NewCell(values);
      if (slot.compare_exchange_strong(c, mine, std::memory_order_acq_rel, std::memory_order_acquire)) {
        return &mine->metric;
      }
      // Another thread filled the slot first: `c` is its cell, compared below.
    }
    if (SameValues(c->values, values)) {
      delete mine;
      return &c->metric;
    }
  }
  delete mine;
  return &overflow_->metric;
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

struct Registry::Entry {
  std::string name;
  std::string help;
  Type type;
  std::vector<std::string> labels;
  std::function<void(std::string*)> render;  // appends the samples
  std::function<void()> destroy;
};

Registry::Registry() = default;

Registry::~Registry() {
  for (auto& e : entries_) {
    if (e->destroy) e->destroy();
  }
}

Family<Counter>* Registry::AddCounter(std::string name, std::string help, std::vector<std::string> labels,
                                      size_t capacity) {
  auto* f = new Family<Counter>(labels, capacity, {});
  auto e = std::make_unique<Entry>();
  e->name = std::move(name);
  e->help = std::move(help);
  e->type = Type::kCounter;
  e->labels = std::move(labels);
  e->render = [f, n = e->name](std::string* out) {
    auto one = [&](const Family<Counter>::Cell* c) {
      if (c == nullptr) return;
      absl::StrAppend(out, n, LabelText(f->label_names_, c->values), " ", c->metric.value(), "\n");
    };
    bool any = false;
    for (size_t i = 0; i < f->capacity_; ++i) {
      const auto* c = f->slots_[i].load(std::memory_order_acquire);
      any |= c != nullptr;
      one(c);
    }
    // A family without labels always has its one sample (0 until counted).
    if (!any && f->label_names_.empty()) one(f->overflow_.get());
    // Label sets past the family's capacity share the "_other" cell.
    if (f->overflow_->metric.value() > 0 && !f->label_names_.empty()) one(f->overflow_.get());
  };
  e->destroy = [f] { delete f; };
  std::lock_guard<std::mutex> lock(mu_);
  entries_.push_back(std::move(e));
  return f;
}

Family<Gauge>* Registry::AddGauge(std::string name, std::string help, std::vector<std::string> labels,
                                  size_t capacity) {
  auto* f = new Family<Gauge>(labels, capacity, {});
  auto e = std::make_unique<Entry>();
  e->name = std::move(name);
  e->help = std::move(help);
  e->type = Type::kGauge;
  e->labels = std::move(labels);
  e->render = [f, n = e->name](std::string* out) {
    bool any = false;
    for (size_t i = 0; i < f->capacity_; ++i) {
      const auto* c = f->slots_[i].load(std::memory_order_acquire);
      if (c == nullptr) continue;
      any = true;
      absl::StrAppend(out, n, LabelText(f->label_names_, c->values), " ", FormatValue(c->metric.value()), "\n");
    }
    if (!any && f->label_names_.empty()) absl::StrAppend(out, n, " ", FormatValue(f->overflow_->metric.value()), "\n");
  };
  e->destroy = [f] { delete f; };
  std::lock_guard<std::mutex> lock(mu_);
  entries_.push_back(std::move(e));
  return f;
}

Family<Histogram>* Registry::AddHistogram(std::string name, std::string help, std::vector<std::string> labels,
                                          std::vector<double> bounds, size_t capacity) {
  auto* f = new Family<Histogram>(labels, capacity, std::move(bounds));
  auto e = std::make_unique<Entry>();
  e->name = std::move(name);
  e->help = std::move(help);
  e->type = Type::kHistogram;
  e->labels = std::move(labels);
  e->render = [f, n = e->name](std::string* out) {
    auto one = [&](const Family<Histogram>::Cell* c) {
      const std::vector<uint64_t> counts = c->metric.Counts();
      uint64_t cumulative = 0;
      for (size_t b = 0; b < counts.size(); ++b) {
        cumulative += counts[b];
        const std::string le = absl::StrCat(
            "le=\"", b < f->bounds_.size() ? FormatValue(f->bounds_[b]) : std::string("+Inf"), "\"");
        absl::StrAppend(out, n, "_bucket", LabelText(f->label_names_, c->values, le), " ", cumulative, "\n");
      }
      absl::StrAppend(out, n, "_sum", LabelText(f->label_names_, c->values), " ", FormatValue(c->metric.sum()),
                      "\n");
      absl::StrAppend(out, n, "_count", LabelText(f->label_names_, c->values), " ", cumulative, "\n");
    };
    bool any = false;
    for (size_t i = 0; i < f->capacity_; ++i) {
      const auto* c = f->slots_[i].load(std::memory_order_acquire);
      if (c == nullptr) continue;
      any = true;
      one(c);
    }
    if (!any && f->label_names_.empty()) one(f->overflow_.get());
  };
  e->destroy = [f] { delete f; };
  std::lock_guard<std::mutex> lock(mu_);
  entries_.push_back(std::move(e));
  return f;
}

void Registry::AddCallback(std::string name, std::string help, Type type, std::vector<std::string> labels,
                           std::function<void(const Emit&)> collect) {
  auto e = std::make_unique<Entry>();
  e->name = std::move(name);
  e->help = std::move(help);
  e->type = type;
  e->labels = std::move(labels);
  e->render = [collect = std::move(collect), n = e->name, names = e->labels](std::string* out) {
    collect([&](std::initializer_list<std::string_view> values, double v) {
      absl::StrAppend(out, n, LabelText(names, std::vector<std::string>(values.begin(), values.end())), " ",
                      FormatValue(v), "\n");
    });
  };
  std::lock_guard<std::mutex> lock(mu_);
  entries_.push_back(std::move(e));
}

std::string Registry::Render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  out.reserve(16384);
  for (const auto& e : entries_) {
    absl::StrAppend(&out, "# HELP ", e->name, " ", EscapeHelp(e->help), "\n# TYPE ", e->name, " ",
                    TypeName(e->type), "\n");
    e->render(&out);
  }
  return out;
}

}  // namespace linesign::metrics
