// linesign-list-bench: ListCertificates' store query on a large SQLite store (issue 11). Fills a database through
// the store API (RecordBatch, 1,000 certificates a transaction: synthetic records, no signing) unless it already
// holds the rows, then times each list filter: the first page and the pages 10 and 100 pages in, 100 certificates
// a page, the median of --repeat runs. Not a test: it prints figures for bench/README.md.
//
//   linesign-list-bench --db /tmp/list.db --rows 1000000
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/clock.h"
#include "server/store/sqlite/sqlite_store.h"

namespace {

using linesign::store::CertificateQuery;
using linesign::store::ListStatus;

constexpr int64_t kStart = 1750000000;  // the first certificate's issue time
constexpr int kProfiles = 3;
constexpr int kStations = 50;

linesign::store::CertificateRecord Record(int64_t i) {
  linesign::store::CertificateRecord r;
  r.issuer_id = "ISSUER";
  r.serial_hex = absl::StrFormat("%016X%016X", i * 2654435761u, i);
  r.subject = absl::StrFormat("O=Acme,CN=DEV%010d", i);
  r.sans = {{"DNS", absl::StrFormat("dev%d.devices.example", i)}};
  r.station = absl::StrCat("line", i % kStations, "-st1");
  r.profile = i % kProfiles == 0 ? "server" : i % kProfiles == 1 ? "device" : "serial";
  r.request_id = absl::StrCat("req-", i);
  r.csr_sha256 = absl::StrCat("CSR", i);
  r.spki_sha256 = absl::StrCat("SPKI", i);
  r.der = std::string(500, 'x');  // about a device certificate's size
  r.issued_at = kStart + i / 50;  // 50 a second
  r.not_before = r.issued_at - 300;
  r.not_after = r.issued_at + (r.profile == "server" ? 30 : 365) * 86400;
  // A few revoked and superseded, as a long-running CA has them.
  if (i % 997 == 0) r.status = linesign::store::CertificateStatus::kRevoked;
  if (i % 499 == 0) r.status = linesign::store::CertificateStatus::kSuperseded;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"linesign-list-bench: ListCertificates on a large SQLite store"};
  std::string db;
  int64_t rows = 1000000;
  int repeat = 5;
  app.add_option("--db", db, "Database file (filled when it holds fewer rows)")->required();
  app.add_option("--rows", rows, "Certificates in the store")->capture_default_str();
  app.add_option("--repeat", repeat, "Runs per figure (the median is printed)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  auto store = linesign::store::SqliteStore::Open(db);
  if (!store.ok()) {
    std::cerr << store.status() << "\n";
    return 1;
  }
  int64_t have = *(*store)->Count();
  auto fill_start = std::chrono::steady_clock::now();
  for (int64_t i = have; i < rows;) {
    linesign::store::Batch batch;
    for (int k = 0; k < 1000 && i < rows; ++k, ++i) batch.entries.push_back({.cert = Record(i)});
    if (auto out = (*store)->RecordBatch(batch); !out.ok()) {
      std::cerr << out.status() << "\n";
      return 1;
    }
    (void)(*store)->Checkpoint();
  }
  if (have < rows) {
    std::printf("filled %lld certificates in %.1f s\n", static_cast<long long>(rows - have),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - fill_start).count());
  }

  const int64_t now = kStart + rows / 50 / 2;  // halfway through the issue times
  const std::map<std::string, int64_t> rb = {{"server", 10 * 86400}, {"device", 60 * 86400}, {"serial", 60 * 86400}};
  struct Case {
    const char* name;
    CertificateQuery q;
  };
  std::vector<Case> cases = {
      {"no filter", {}},
      {"profile", {.profile = "device"}},
      {"station", {.station = "line7-st1"}},
      {"issued between (1 hour)", {.issued_from = now, .issued_before = now + 3600}},
      {"expiring before", {.expiring_before = now + 86400}},
      {"status valid", {.status = ListStatus::kValid, .now = now, .renew_before_seconds = rb}},
      {"valid, 2/3 due", {.status = ListStatus::kValid, .now = kStart + 330 * 86400, .renew_before_seconds = rb}},
      {"status renewal_due", {.status = ListStatus::kRenewalDue, .now = now, .renew_before_seconds = rb}},
      // 35 days before the yearly certificates expire: all of them are due (the 30-day ones have expired).
      {"renewal_due, 2/3 due",
       {.status = ListStatus::kRenewalDue, .now = kStart + 330 * 86400, .renew_before_seconds = rb}},
      {"status expired", {.status = ListStatus::kExpired, .now = now, .renew_before_seconds = rb}},
      {"status revoked", {.status = ListStatus::kRevoked}},
      {"subject contains (rare)", {.subject_contains = "DEV0000777"}},
      {"profile + station", {.profile = "server", .station = "line3-st1"}},
  };
  std::printf("%-26s %14s %14s %14s\n", "filter (100 a page)", "first page ms", "page 11 ms", "page 101 ms");
  for (Case& c : cases) {
    std::vector<double> first, deep, deeper;
    for (int r = 0; r < repeat; ++r) {
      CertificateQuery q = c.q;
      q.page_size = 100;
      for (int page = 0; page <= 100; ++page) {
        auto t0 = std::chrono::steady_clock::now();
        auto p = (*store)->List(q);
        double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        if (!p.ok()) {
          std::cerr << c.name << ": " << p.status() << "\n";
          return 1;
        }
        if (page == 0) first.push_back(ms);
        if (page == 10) deep.push_back(ms);
        if (page == 100) deeper.push_back(ms);
        if (p->next_page_token.empty()) break;
        q.page_token = p->next_page_token;
      }
    }
    auto median = [](std::vector<double> v) {
      if (v.empty()) return -1.0;
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    std::printf("%-26s %14.2f %14.2f %14.2f\n", c.name, median(first), median(deep), median(deeper));
  }
  return 0;
}
