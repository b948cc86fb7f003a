#include "server/observability/metrics.h"

#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace linesign::metrics {
namespace {

using ::testing::HasSubstr;

TEST(MetricsTest, RendersCountersGaugesAndHistogramsInTheTextFormat) {
  Registry r;
  r.AddCounter("x_total", "Things.", {"profile", "station"})->Get({"device", "line1-st1"})->Add(3);
  r.AddGauge("x_depth", "Depth.")->Get({})->Set(7);
  auto* h = r.AddHistogram("x_seconds", "Latency.", {}, {0.1, 1})->Get({});
  h->Observe(0.0625);
  h->Observe(0.5);
  h->Observe(4);
  EXPECT_EQ(r.Render(),
            "# HELP x_total Things.\n# TYPE x_total counter\n"
            "x_total{profile=\"device\",station=\"line1-st1\"} 3\n"
            "# HELP x_depth Depth.\n# TYPE x_depth gauge\nx_depth 7\n"
            "# HELP x_seconds Latency.\n# TYPE x_seconds histogram\n"
            "x_seconds_bucket{le=\"0.1\"} 1\nx_seconds_bucket{le=\"1\"} 2\n"
            "x_seconds_bucket{le=\"+Inf\"} 3\nx_seconds_sum 4.5625\nx_seconds_count 3\n");
}

TEST(MetricsTest, AnUnlabelledCounterShowsZeroBeforeItCounts) {
  Registry r;
  r.AddCounter("y_total", "Y.");
  EXPECT_THAT(r.Render(), HasSubstr("\ny_total 0\n"));
}

// Station identities come from client certificates: quotes, backslashes, newlines and bytes that are not UTF-8
// must not break the exposition format.
TEST(MetricsTest, LabelValuesAreEscapedAndMadeUtf8) {
  Registry r;
  r.AddCounter("z_total", "Z.", {"station"})->Get({"a\"b\\c\nd\xff"})->Add();
  EXPECT_THAT(r.Render(), HasSubstr("z_total{station=\"a\\\"b\\\\c\\nd\\\\xFF\"} 1\n"));
}

TEST(MetricsTest, LabelSetsPastTheCapacityShareOneOtherSeries) {
  Registry r;
  auto* f = r.AddCounter("s_total", "S.", {"station"}, /*capacity=*/2);
  f->Get({"a"})->Add();
  f->Get({"b"})->Add();
  f->Get({"c"})->Add();
  f->Get({"d"})->Add();
  EXPECT_EQ(f->Get({"a"})->value(), 1u);
  const std::string out = r.Render();
  EXPECT_THAT(out, HasSubstr("s_total{station=\"_other\"} 2\n"));
}

TEST(MetricsTest, CallbacksEmitAtRenderTime) {
  Registry r;
  int depth = 1;
  r.AddCallback("q_depth", "Q.", Type::kGauge, {"kind"}, [&](const Emit& emit) { emit({"iot"}, depth); });
  depth = 42;
  EXPECT_THAT(r.Render(), HasSubstr("q_depth{kind=\"iot\"} 42\n"));
}

// Many threads creating and counting the same and different label sets: each count lands exactly once.
TEST(MetricsTest, ConcurrentGetAndAddLoseNothing) {
  Registry r;
  auto* f = r.AddCounter("c_total", "C.", {"station"});
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([f] {
      for (int i = 0; i < 10000; ++i) f->Get({i % 2 == 0 ? "even" : std::to_string(i % 50)})->Add();
    });
  }
  for (auto& t : threads) t.join();
  uint64_t total = f->Get({"even"})->value();
  for (int i = 1; i < 50; i += 2) total += f->Get({std::to_string(i)})->value();
  EXPECT_EQ(total, 80000u);
  EXPECT_EQ(f->Get({"even"})->value(), 40000u);
}

TEST(MetricsTest, FormatValue) {
  EXPECT_EQ(FormatValue(3), "3");
  EXPECT_EQ(FormatValue(-2), "-2");
  EXPECT_EQ(FormatValue(0.25), "0.25");
  EXPECT_EQ(FormatValue(1.0 / 0.0), "+Inf");
}

}  // namespace
}  // namespace linesign::metrics
