// linesign-list-bench: a large store, SQLite or PostgreSQL (issues 11 and 13). Fills the store through the store
// API (RecordBatch, --fill-batch synthetic certificates a transaction, no signing) up to --rows, printing the rate
// as it goes and the rate of each million, then its size on disk per certificate, then times each list filter: the
// first page and the pages 10 and 100 pages in, 100 certificates a page, the median of --repeat runs. With
// --rate-batches it then measures the durable RecordBatch rate with the signer's small batches (--rate-batch-size)
// on this store and, alternating round by round, on a second one (--compare-db / --compare-postgres, e.g. an empty
// store). Not a test: it prints figures for bench/README.md.
//
//   linesign-list-bench --db /tmp/list.db --rows 1000000
//   linesign-list-bench --postgres "host=127.0.0.1 user=linesign dbname=big" --password-file pw --rows 10000000
//       --rate-batches 300 --compare-postgres "host=127.0.0.1 user=linesign dbname=empty"     (bench/scale.sh)
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/clock.h"
#include "linesign/v1/config.pb.h"
#include "server/store/postgres/connection.h"
#include "server/store/store.h"

namespace {

using linesign::store::CertificateQuery;
using linesign::store::ListStatus;
using linesign::store::Store;
using Clock = std::chrono::steady_clock;

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

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

double Median(std::vector<double> v) {
  if (v.empty()) return -1.0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return -1.0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// Backend is one store to fill or measure: a SQLite file or a PostgreSQL database (with a connection of its own
// for the size queries, which the store API does not offer).
struct Backend {
  std::string name;
  std::string sqlite_path;
  linesign::v1::PostgresStoreConfig postgres;
  std::unique_ptr<Store> store;
  int64_t next = 0;  // the next synthetic certificate's number

  static absl::StatusOr<Backend> Open(std::string name, const std::string& db, const std::string& postgres_connection,
                                      const std::string& password_file) {
    Backend b;
    b.name = std::move(name);
    linesign::v1::StoreConfig config;
    if (!db.empty()) {
      b.sqlite_path = db;
      config.mutable_sqlite()->set_path(db);
    } else {
      b.postgres.set_connection(postgres_connection);
      b.postgres.set_password_file(password_file);
      *config.mutable_postgres() = b.postgres;
    }
    auto store = linesign::store::Open(config, linesign::RealClock::Get());
    if (!store.ok()) return store.status();
    b.store = *std::move(store);
    auto count = b.store->Count();
    if (!count.ok()) return count.status();
    b.next = *count;
    return b;
  }

  // PrintSize prints the size on disk and per certificate. SQLite: the database file and its WAL, after a
  // checkpoint. PostgreSQL: the database and the certificates, events and outbox tables with their indexes and
  // TOAST.
  void PrintSize() {
    auto count = store->Count();
    const double rows = count.ok() ? static_cast<double>(*count) : 0.0;
    std::printf("size of %s (%.0f certificates):\n", name.c_str(), rows);
    auto line = [&](const char* what, double bytes) {
      std::printf("  %-34s %10.1f MB  %8.0f bytes/certificate\n", what, bytes / 1e6, rows > 0 ? bytes / rows : 0.0);
    };
    if (!sqlite_path.empty()) {
      (void)store->Checkpoint();
      struct stat st;
      double db = stat(sqlite_path.c_str(), &st) == 0 ? static_cast<double>(st.st_size) : 0.0;
      double wal = stat((sqlite_path + "-wal").c_str(), &st) == 0 ? static_cast<double>(st.st_size) : 0.0;
      line("database file", db);
      line("WAL file", wal);
      line("total", db + wal);
      std::fflush(stdout);
      return;
    }
    linesign::store::postgres::ConnectSettings settings{.connection = postgres.connection()};
    if (!postgres.password_file().empty()) {
      std::ifstream in(postgres.password_file());
      std::string password;
      std::getline(in, password);
      settings.password = password;
    }
    auto c = linesign::store::postgres::Connection::Connect(settings);
    if (!c.ok()) {
      std::cerr << c.status() << "\n";
      return;
    }
    auto query = [&](const std::string& sql) -> double {
      auto r = (*c)->Exec("size", sql, {}, /*prepare=*/false);
      if (!r.ok() || r->rows() == 0) return 0.0;
      return static_cast<double>(r->Int(0, 0));
    };
    line("pg_database_size", query("SELECT pg_database_size(current_database())"));
    for (const char* table : {"certificates", "events", "outbox"}) {
      line(absl::StrCat(table, " (table + TOAST)").c_str(),
           query(absl::StrCat("SELECT pg_table_size('", table, "')")));
      line(absl::StrCat(table, " indexes").c_str(), query(absl::StrCat("SELECT pg_indexes_size('", table, "')")));
    }
    std::fflush(stdout);
  }
};

// Fill records synthetic certificates into `b` until it holds `rows`, `batch_size` a transaction, and prints the
// rate every 100,000 and of each million.
absl::Status Fill(Backend& b, int64_t rows, int batch_size) {
  if (b.next >= rows) return absl::OkStatus();
  const int64_t from = b.next;
  auto start = Clock::now();
  auto million_start = start, tick_start = start;
  int64_t tick_from = from, million_from = from;
  std::vector<std::pair<int64_t, double>> millions;  // (rows at its end, certificates/s)
  while (b.next < rows) {
    linesign::store::Batch batch;
    for (int k = 0; k < batch_size && b.next < rows; ++k, ++b.next) batch.entries.push_back({.cert = Record(b.next)});
    if (auto out = b.store->RecordBatch(batch); !out.ok()) return out.status();
    if (auto s = b.store->Checkpoint(); !s.ok()) return s;
    if (b.next - tick_from >= 100000 || b.next == rows) {
      std::printf("fill %s: %lld rows, %.0f s, %.0f certificates/s\n", b.name.c_str(), static_cast<long long>(b.next),
                  Seconds(start), static_cast<double>(b.next - tick_from) / Seconds(tick_start));
      std::fflush(stdout);
      tick_start = Clock::now();
      tick_from = b.next;
    }
    if (b.next / 1000000 != (b.next - 1) / 1000000 || b.next == rows) {
      // A million boundary (the batch size divides a million) or the end.
      millions.push_back({b.next, static_cast<double>(b.next - million_from) / Seconds(million_start)});
      std::printf("fill %s: the million up to %lld rows: %.0f certificates/s\n", b.name.c_str(),
                  static_cast<long long>(b.next), millions.back().second);
      million_start = Clock::now();
      million_from = b.next;
    }
  }
  std::printf("filled %s: %lld certificates in %.1f s (%d a batch); first million %.0f/s, last million %.0f/s\n",
              b.name.c_str(), static_cast<long long>(rows - from), Seconds(start), batch_size, millions.front().second,
              millions.back().second);
  std::fflush(stdout);
  return absl::OkStatus();
}

// TimeLists times each filter. A filter whose first page takes longer than `slow_ms` is timed on that page only,
// once: a query that reads the whole table per page would otherwise run for hours on ten million rows.
absl::Status TimeLists(Backend& b, int64_t rows, int repeat, double slow_ms) {
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
  std::printf("%s: %-26s %14s %14s %14s\n", b.name.c_str(), "filter (100 a page)", "first page ms", "page 11 ms",
              "page 101 ms");
  for (Case& c : cases) {
    std::vector<double> first, deep, deeper;
    for (int r = 0; r < repeat; ++r) {
      CertificateQuery q = c.q;
      q.page_size = 100;
      for (int page = 0; page <= 100; ++page) {
        auto t0 = Clock::now();
        auto p = b.store->List(q);
        double ms = Seconds(t0) * 1e3;
        if (!p.ok()) return p.status();
        if (page == 0) first.push_back(ms);
        if (page == 0 && ms > slow_ms) {
          r = repeat;
          break;
        }
        if (page == 10) deep.push_back(ms);
        if (page == 100) deeper.push_back(ms);
        if (p->next_page_token.empty()) break;
        q.page_token = p->next_page_token;
      }
    }
    if (first.size() == 1 && first[0] > slow_ms) {
      std::printf("%s: %-26s %14.2f %14s %14s  (slow: one page, once)\n", b.name.c_str(), c.name, first[0], "-", "-");
    } else {
      std::printf("%s: %-26s %14.2f %14.2f %14.2f\n", b.name.c_str(), c.name, Median(first), Median(deep),
                  Median(deeper));
    }
    std::fflush(stdout);
  }
  return absl::OkStatus();
}

// TimeBatches records `batches` transactions of `batch_size` new certificates into `b`, one after the other (as
// the signer commits them; the store's Checkpoint after each, as the server's task calls it), and prints the
// certificates/s of the whole and the p50/p99 of one RecordBatch.
absl::StatusOr<double> TimeBatches(Backend& b, int batches, int batch_size, int round) {
  std::vector<double> ms;
  auto start = Clock::now();
  for (int n = 0; n < batches; ++n) {
    linesign::store::Batch batch;
    for (int k = 0; k < batch_size; ++k, ++b.next) batch.entries.push_back({.cert = Record(b.next)});
    auto t0 = Clock::now();
    if (auto out = b.store->RecordBatch(batch); !out.ok()) return out.status();
    ms.push_back(Seconds(t0) * 1e3);
    if (auto s = b.store->Checkpoint(); !s.ok()) return s;
  }
  double rate = static_cast<double>(batches) * batch_size / Seconds(start);
  std::printf("rate round %d %-8s (%lld rows): %8.0f certificates/s  RecordBatch p50 %.2f ms  p99 %.2f ms\n", round,
              b.name.c_str(), static_cast<long long>(b.next), rate, Percentile(ms, 0.5), Percentile(ms, 0.99));
  std::fflush(stdout);
  return rate;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"linesign-list-bench: a large store (SQLite or PostgreSQL): fill, size, List, RecordBatch rate"};
  std::string db, postgres, password_file, compare_db, compare_postgres;
  int64_t rows = 1000000;
  double slow_ms = 2000;
  int repeat = 5, fill_batch = 10000, rate_batches = 0, rate_batch_size = 64, rate_rounds = 3;
  bool skip_list = false;
  auto* db_opt = app.add_option("--db", db, "SQLite database file (filled when it holds fewer rows)");
  auto* pg_opt = app.add_option("--postgres", postgres, "PostgreSQL connection string, instead of --db");
  db_opt->excludes(pg_opt);
  app.add_option("--password-file", password_file, "PostgreSQL password file (for --postgres and --compare-postgres)");
  app.add_option("--rows", rows, "Certificates in the store")->capture_default_str();
  app.add_option("--fill-batch", fill_batch, "Certificates a transaction while filling (divides a million)")
      ->capture_default_str();
  app.add_option("--repeat", repeat, "Runs per list figure (the median is printed)")->capture_default_str();
  app.add_option("--slow-ms", slow_ms, "A filter whose first page takes longer is timed on it only, once")
      ->capture_default_str();
  app.add_flag("--skip-list", skip_list, "Do not time the list filters");
  app.add_option("--rate-batches", rate_batches, "Small RecordBatch transactions per round (0: no rate rounds)")
      ->capture_default_str();
  app.add_option("--rate-batch-size", rate_batch_size, "Certificates per small RecordBatch")->capture_default_str();
  app.add_option("--rate-rounds", rate_rounds, "Rate rounds (alternating with the compared store)")
      ->capture_default_str();
  auto* cdb_opt = app.add_option("--compare-db", compare_db, "SQLite store alternated with in the rate rounds");
  auto* cpg_opt = app.add_option("--compare-postgres", compare_postgres, "PostgreSQL store, likewise");
  cdb_opt->excludes(cpg_opt);
  CLI11_PARSE(app, argc, argv);
  if (db.empty() == postgres.empty() || 1000000 % fill_batch != 0) {
    std::cerr << "give --db or --postgres, and a --fill-batch that divides a million\n";
    return 2;
  }

  auto main_store = Backend::Open("full", db, postgres, password_file);
  if (!main_store.ok()) {
    std::cerr << main_store.status() << "\n";
    return 1;
  }
  Backend& b = *main_store;
  if (auto s = Fill(b, rows, fill_batch); !s.ok()) {
    std::cerr << s << "\n";
    return 1;
  }
  b.PrintSize();
  if (!skip_list) {
    if (auto s = TimeLists(b, rows, repeat, slow_ms); !s.ok()) {
      std::cerr << s << "\n";
      return 1;
    }
  }
  if (rate_batches > 0) {
    std::vector<Backend> stores;
    stores.push_back(std::move(b));
    if (!compare_db.empty() || !compare_postgres.empty()) {
      auto other = Backend::Open("compared", compare_db, compare_postgres, password_file);
      if (!other.ok()) {
        std::cerr << other.status() << "\n";
        return 1;
      }
      stores.push_back(*std::move(other));
    }
    std::map<std::string, std::vector<double>> rates;
    for (int round = 1; round <= rate_rounds; ++round) {
      for (Backend& s : stores) {
        auto rate = TimeBatches(s, rate_batches, rate_batch_size, round);
        if (!rate.ok()) {
          std::cerr << rate.status() << "\n";
          return 1;
        }
        rates[s.name].push_back(*rate);
      }
    }
    for (auto& [name, r] : rates) std::printf("rate median %-8s %8.0f certificates/s\n", name.c_str(), Median(r));
    if (rates.size() == 2) std::printf("rate ratio full/compared %.3f\n", Median(rates["full"]) / Median(rates["compared"]));
  }
  return 0;
}
