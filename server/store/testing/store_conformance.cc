#include "server/store/testing/store_conformance.h"

#include <atomic>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"

namespace linesign::store::testing {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

CertificateRecord Certificate(const std::string& serial, const std::string& request_id) {
  CertificateRecord r;
  r.issuer_id = "ISSUER";
  r.serial_hex = serial;
  r.subject = "CN=x";
  r.sans = {San{"DNS", "x.example"}};
  r.station = "station-1";
  r.profile = "device";
  r.request_id = request_id;
  r.csr_sha256 = "CSR-" + request_id;
  r.spki_sha256 = "SPKI-" + request_id;
  r.der = std::string("\x30\x00", 2);
  r.not_before = 1;
  r.not_after = 2;
  r.issued_at = 1;
  return r;
}

void StoreConformanceTest::SetUp() {
  backend_ = GetParam().make();
  ASSERT_NE(backend_, nullptr);
  auto store = backend_->Open(&clock_);
  ASSERT_TRUE(store.ok()) << store.status();
  store_ = *std::move(store);
}

namespace {

// Entry is a certificate (its own ISSUED event) with one further event and one outbox item keyed by its serial.
BatchEntry Entry(const std::string& serial, const std::string& request_id, const std::string& outbox_kind = "test") {
  BatchEntry e;
  e.cert = Certificate(serial, request_id);
  e.events.push_back(Event{.type = "NOTED",
                           .issuer_id = "ISSUER",
                           .serial_hex = serial,
                           .station = "station-1",
                           .profile = "device",
                           .time = absl::FromUnixMicros(1700000000123456),
                           .data = "{}"});
  e.outbox.push_back(OutboxItem{.kind = outbox_kind, .dedupe_key = serial, .payload = "register " + serial});
  return e;
}

std::vector<std::string> Serials(const std::vector<Event>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) out.push_back(e.serial_hex);
  return out;
}

// Log renders events as "TYPE serial" lines.
std::vector<std::string> Log(const std::vector<Event>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) out.push_back(absl::StrCat(e.type, " ", e.serial_hex));
  return out;
}

std::vector<std::string> Keys(const std::vector<OutboxItem>& items) {
  std::vector<std::string> out;
  for (const auto& o : items) out.push_back(o.dedupe_key);
  return out;
}

ClaimRequest Claim(absl::Time now, const std::string& owner, int limit = 100, const std::string& kind = "") {
  return ClaimRequest{.kind = kind, .now = now, .lease = absl::Minutes(1), .limit = limit, .owner = owner};
}

TEST_P(StoreConformanceTest, RecordsCertificatesEventsAndOutboxInOneBatch) {
  Batch batch;
  batch.entries = {Entry("01", "a"), Entry("02", "b")};
  batch.events.push_back(Event{.type = "CA_ROTATED", .time = absl::FromUnixSeconds(5), .data = "standalone"});
  batch.outbox.push_back(OutboxItem{.kind = "test", .dedupe_key = "standalone", .payload = "p"});
  auto out = store_->RecordBatch(batch);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(*out, ElementsAre(RecordOutcome::kRecorded, RecordOutcome::kRecorded));

  auto found = store_->FindBySerial("ISSUER", "02");
  ASSERT_TRUE(found.ok() && found->has_value()) << found.status();
  const CertificateRecord& r = **found;
  EXPECT_GT(r.id, 0);
  EXPECT_EQ(r.request_id, "b");
  EXPECT_EQ(r.sans, (std::vector<San>{San{"DNS", "x.example"}}));
  EXPECT_EQ(r.csr_sha256, "CSR-b");
  EXPECT_EQ(r.spki_sha256, "SPKI-b");
  EXPECT_EQ(r.der, std::string("\x30\x00", 2));
  EXPECT_EQ(r.status, CertificateStatus::kValid);
  EXPECT_EQ(r.renews_serial, "");
  EXPECT_EQ(r.revocation_reason, -1);
  auto by_request = store_->FindByRequest("station-1", "a");
  ASSERT_TRUE(by_request.ok() && by_request->has_value());
  EXPECT_EQ((*by_request)->serial_hex, "01");

  // Each certificate is its ISSUED event, followed by its entry's events; the batch's own events come last.
  auto events = store_->ReadAfter(0, 10);
  ASSERT_TRUE(events.ok()) << events.status();
  EXPECT_THAT(Log(*events), ElementsAre("ISSUED 01", "NOTED 01", "ISSUED 02", "NOTED 02", "CA_ROTATED "));
  ASSERT_EQ(events->size(), 5u);
  const Event& issued = (*events)[2];
  EXPECT_EQ(issued.id, r.id);
  EXPECT_EQ(issued.issuer_id, "ISSUER");
  EXPECT_EQ(issued.station, "station-1");
  EXPECT_EQ(issued.profile, "device");
  EXPECT_EQ(issued.time, absl::FromUnixSeconds(r.issued_at));
  EXPECT_EQ((*events)[1].time, absl::FromUnixMicros(1700000000123456));
  EXPECT_EQ((*events)[1].data, "{}");
  EXPECT_EQ((*events)[4].data, "standalone");
  for (size_t i = 1; i < events->size(); ++i) EXPECT_GT((*events)[i].id, (*events)[i - 1].id);

  auto items = store_->Claim(Claim(clock_.Now(), "runner"));
  ASSERT_TRUE(items.ok()) << items.status();
  EXPECT_THAT(Keys(*items), ElementsAre("01", "02", "standalone"));
  EXPECT_EQ((*items)[0].payload, "register 01");
}

// A batch whose transaction dies half-way (the second entry's outbox write fails inside the database, after the
// first entry and the second certificate were written) leaves nothing of itself visible, to this handle or
// another; the store goes on working.
TEST_P(StoreConformanceTest, ATransactionKilledHalfWayLeavesNothing) {
  ASSERT_TRUE(store_->RecordBatch(Batch{.entries = {Entry("00", "before")}}).ok());
  ASSERT_TRUE(backend_->FailOutboxInserts("poison").ok());
  Batch batch;
  batch.entries = {Entry("01", "a"), Entry("02", "b", "poison"), Entry("03", "c")};
  batch.events.push_back(Event{.type = "STANDALONE"});
  auto out = store_->RecordBatch(batch);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kUnavailable) << out.status();

  auto other = backend_->Open(&clock_);
  ASSERT_TRUE(other.ok()) << other.status();
  for (Store* s : {store_.get(), other->get()}) {
    EXPECT_EQ(*s->Count(), 1);
    EXPECT_FALSE(s->FindBySerial("ISSUER", "01")->has_value());
    EXPECT_FALSE(s->FindByRequest("station-1", "b")->has_value());
    EXPECT_THAT(Serials(*s->ReadAfter(0, 100)), ElementsAre("00", "00"));
  }
  EXPECT_THAT(Keys(*store_->Claim(Claim(clock_.Now(), "runner"))), ElementsAre("00"));

  // Without the poisoned entry the same batch goes in whole.
  batch.entries[1] = Entry("02", "b");
  out = store_->RecordBatch(batch);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*store_->Count(), 4);
  EXPECT_EQ(store_->ReadAfter(0, 100)->size(), 9u);  // 4 certificates with their NOTED events, STANDALONE
}

// A serial collision or a duplicate request drops that entry with its events and outbox items, and only it.
TEST_P(StoreConformanceTest, ARefusedEntryDropsOnlyItselfWithItsEventsAndOutbox) {
  ASSERT_TRUE(store_->RecordBatch(Batch{.entries = {Entry("01", "a"), Entry("02", "b")}}).ok());
  Batch second;
  second.entries = {Entry("01", "c"), Entry("03", "a"), Entry("04", "d"), Entry("05", "d")};
  auto out = store_->RecordBatch(second);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(*out, ElementsAre(RecordOutcome::kSerialCollision, RecordOutcome::kDuplicateRequest,
                                RecordOutcome::kRecorded, RecordOutcome::kDuplicateRequest));  // within one batch too
  EXPECT_EQ(*store_->Count(), 3);
  EXPECT_EQ((*store_->FindByRequest("station-1", "a"))->serial_hex, "01");
  EXPECT_FALSE(store_->FindBySerial("ISSUER", "03")->has_value());
  EXPECT_FALSE(store_->FindBySerial("ISSUER", "05")->has_value());
  EXPECT_FALSE(store_->FindByRequest("station-1", "c")->has_value());
  EXPECT_THAT(Serials(*store_->ReadAfter(0, 100)), ElementsAre("01", "01", "02", "02", "04", "04"));
  EXPECT_THAT(Keys(*store_->Claim(Claim(clock_.Now(), "runner"))), ElementsAre("01", "02", "04"));
}

// An entry refused for its serial does not take its request id: a later entry of the same batch with that
// request id (the signer's retry with a new serial) is recorded, and the refused one stays a serial collision.
TEST_P(StoreConformanceTest, AnEntryRefusedForItsSerialLeavesItsRequestIdFree) {
  ASSERT_TRUE(store_->RecordBatch(Batch{.entries = {Entry("01", "a")}}).ok());
  auto out = store_->RecordBatch(Batch{.entries = {Entry("01", "x"), Entry("02", "x"), Entry("03", "x")}});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(*out, ElementsAre(RecordOutcome::kSerialCollision, RecordOutcome::kRecorded,
                                RecordOutcome::kDuplicateRequest));
  EXPECT_EQ((*store_->FindByRequest("station-1", "x"))->serial_hex, "02");
  EXPECT_THAT(Serials(*store_->ReadAfter(0, 100)), ElementsAre("01", "01", "02", "02"));
  EXPECT_THAT(Keys(*store_->Claim(Claim(clock_.Now(), "runner"))), ElementsAre("01", "02"));
}

// ISSUED is written by recording the certificate; appending one is refused and writes nothing of the batch.
TEST_P(StoreConformanceTest, RefusesAnAppendedIssuedEvent) {
  Batch batch;
  batch.entries = {Entry("01", "a")};
  batch.entries[0].events.push_back(Event{.type = kEventIssued, .serial_hex = "01"});
  auto out = store_->RecordBatch(batch);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << out.status();
  EXPECT_THAT(out.status().message(), HasSubstr("ISSUED"));
  out = store_->RecordBatch(Batch{.events = {Event{.type = kEventIssued}}});
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << out.status();
  EXPECT_EQ(*store_->Count(), 0);
  EXPECT_TRUE(store_->ReadAfter(0, 10)->empty());
}

TEST_P(StoreConformanceTest, ListPagesByKeysetWithFilters) {
  Batch batch;
  for (int i = 0; i < 30; ++i) {
    BatchEntry e;
    e.cert = Certificate(absl::StrCat("S", i), absl::StrCat("r", i));
    e.cert.profile = i % 3 == 0 ? "server" : "device";
    e.cert.station = i % 2 == 0 ? "station-1" : "station-2";
    e.cert.issued_at = 1000 + i;
    e.cert.not_after = 5000 + i;
    batch.entries.push_back(std::move(e));
  }
  ASSERT_TRUE(store_->RecordBatch(batch).ok());

  auto collect = [&](CertificateQuery q) {
    std::vector<std::string> serials;
    int pages = 0;
    while (true) {
      auto page = store_->List(q);
      EXPECT_TRUE(page.ok()) << page.status();
      if (!page.ok()) break;
      ++pages;
      for (const auto& r : page->records) serials.push_back(r.serial_hex);
      if (page->next_page_token.empty()) break;
      EXPECT_EQ(page->records.size(), static_cast<size_t>(q.page_size));
      q.page_token = page->next_page_token;
    }
    return std::make_pair(serials, pages);
  };
  auto [all, pages] = collect(CertificateQuery{.page_size = 7});
  ASSERT_EQ(all.size(), 30u);
  EXPECT_EQ(pages, 5);
  for (int i = 0; i < 30; ++i) EXPECT_EQ(all[i], absl::StrCat("S", i));  // recording order

  auto [exact, exact_pages] = collect(CertificateQuery{.page_size = 10});
  EXPECT_EQ(exact.size(), 30u);
  EXPECT_EQ(exact_pages, 3);  // no empty fourth page

  auto [servers, _1] = collect(CertificateQuery{.profile = "server", .page_size = 4});
  EXPECT_THAT(servers, ElementsAre("S0", "S3", "S6", "S9", "S12", "S15", "S18", "S21", "S24", "S27"));
  auto [st2_servers, _2] = collect(CertificateQuery{.profile = "server", .station = "station-2", .page_size = 2});
  EXPECT_THAT(st2_servers, ElementsAre("S3", "S9", "S15", "S21", "S27"));
  auto [window, _3] = collect(CertificateQuery{.issued_from = 1010, .issued_before = 1013, .page_size = 2});
  EXPECT_THAT(window, ElementsAre("S10", "S11", "S12"));
  auto [expiring, _4] = collect(CertificateQuery{.expiring_before = 5002, .page_size = 100});
  EXPECT_THAT(expiring, ElementsAre("S0", "S1"));

  auto first = store_->List(CertificateQuery{});
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->records.size(), 30u);  // page size 0 means 100
  EXPECT_EQ(first->next_page_token, "");

  auto bad = store_->List(CertificateQuery{.page_token = "42"});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("page token '42'"));
  EXPECT_EQ(store_->List(CertificateQuery{.page_size = kMaxPageSize + 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Pages read while another handle keeps recording: every certificate that existed before the first page is seen
// exactly once, and no certificate is seen twice.
TEST_P(StoreConformanceTest, KeysetPagingIsStableUnderConcurrentInserts) {
  std::set<std::string> before;
  for (int b = 0; b < 10; ++b) {
    Batch batch;
    for (int i = 0; i < 20; ++i) {
      std::string n = absl::StrCat("old-", b, "-", i);
      batch.entries.push_back(BatchEntry{.cert = Certificate(n, n)});
      before.insert(n);
    }
    ASSERT_TRUE(store_->RecordBatch(batch).ok());
  }
  auto writer_store = backend_->Open(&clock_);
  ASSERT_TRUE(writer_store.ok()) << writer_store.status();
  std::atomic<bool> stop{false};
  std::atomic<int> written{0};
  std::thread writer([&] {
    for (int b = 0; b < 200 && !stop.load(); ++b) {
      Batch batch;
      for (int i = 0; i < 5; ++i) {
        std::string n = absl::StrCat("new-", b, "-", i);
        batch.entries.push_back(BatchEntry{.cert = Certificate(n, n)});
      }
      if ((*writer_store)->RecordBatch(batch).ok()) written += 5;
    }
  });
  std::map<std::string, int> seen;
  CertificateQuery q{.page_size = 3};
  int pages = 0;
  while (true) {
    auto page = store_->List(q);
    ASSERT_TRUE(page.ok()) << page.status();
    ++pages;
    for (const auto& r : page->records) ++seen[r.serial_hex];
    if (page->next_page_token.empty() || pages > 2000) break;
    q.page_token = page->next_page_token;
  }
  stop = true;
  writer.join();
  for (const auto& [serial, n] : seen) EXPECT_EQ(n, 1) << serial << " seen " << n << " times";
  for (const auto& serial : before) EXPECT_EQ(seen.count(serial), 1u) << serial << " was skipped";
  EXPECT_EQ(*store_->Count(), static_cast<int64_t>(before.size()) + written.load());
}

TEST_P(StoreConformanceTest, EventsAreReadInOrderAfterACursor) {
  for (int b = 0; b < 3; ++b) {
    Batch batch;
    for (int i = 0; i < 3; ++i) {
      std::string n = absl::StrCat(b, i);
      batch.entries.push_back(Entry(n, n));
    }
    ASSERT_TRUE(store_->RecordBatch(batch).ok());
  }
  std::vector<std::string> serials;
  int64_t cursor = 0;
  while (true) {
    auto events = store_->ReadAfter(cursor, 2);
    ASSERT_TRUE(events.ok()) << events.status();
    if (events->empty()) break;
    EXPECT_LE(events->size(), 2u);
    for (const auto& e : *events) {
      EXPECT_GT(e.id, cursor);
      cursor = e.id;
      serials.push_back(e.serial_hex);
    }
  }
  EXPECT_THAT(serials, ElementsAre("00", "00", "01", "01", "02", "02", "10", "10", "11", "11", "12", "12", "20",
                                   "20", "21", "21", "22", "22"));
  EXPECT_TRUE(store_->ReadAfter(cursor, 10)->empty());
  ASSERT_TRUE(store_->RecordBatch(Batch{.entries = {Entry("30", "30")}}).ok());
  EXPECT_THAT(Log(*store_->ReadAfter(cursor, 10)), ElementsAre("ISSUED 30", "NOTED 30"));
  // Standalone events and certificates interleave in commit order.
  ASSERT_TRUE(store_->RecordBatch(Batch{.events = {Event{.type = "CA_ROTATED"}}}).ok());
  ASSERT_TRUE(store_->RecordBatch(Batch{.entries = {Entry("31", "31")}}).ok());
  EXPECT_THAT(Log(*store_->ReadAfter(cursor, 10)),
              ElementsAre("ISSUED 30", "NOTED 30", "CA_ROTATED ", "ISSUED 31", "NOTED 31"));
  EXPECT_THAT(Log(*store_->ReadAfter(cursor, 3)), ElementsAre("ISSUED 30", "NOTED 30", "CA_ROTATED "));
  EXPECT_EQ(store_->ReadAfter(0, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->ReadAfter(0, 1001).status().code(), absl::StatusCode::kInvalidArgument);
}

// Stats: the outbox backlog by kind, and with expiry bounds the unexpired certificates (any status) by time left,
// cumulative per bound, from one pass; without bounds no expiry figures at all.
TEST_P(StoreConformanceTest, StatsCountTheBacklogAndTheCertificatesByTimeLeft) {
  const absl::Time now = clock_.Now();
  const int64_t now_s = absl::ToUnixSeconds(now);
  Batch batch;
  int i = 0;
  for (int64_t left : {-86400, 0, 3600, 3 * 86400, 20 * 86400, 20 * 86400, 400 * 86400}) {
    BatchEntry e = Entry(absl::StrCat("5E", i), absl::StrCat("stats-", i), i % 2 == 0 ? "job" : "webhook");
    e.cert.not_after = now_s + left;
    batch.entries.push_back(std::move(e));
    ++i;
  }
  ASSERT_TRUE(store_->RecordBatch(batch).ok());
  ASSERT_TRUE(store_->Revoke(RevokeRequest{.issuer_id = "ISSUER", .serial_hex = "5E3", .reason = 1, .at = now,
                                           .data = "{\"reason\":1}"}).ok());

  auto stats = store_->Stats(now, {absl::Hours(24), absl::Hours(24 * 7), absl::Hours(24 * 30),
                                   absl::InfiniteDuration()});
  ASSERT_TRUE(stats.ok()) << stats.status();
  // Expired (-1 day) and expiring this second (0) are not unexpired; the revoked one still counts.
  EXPECT_THAT(stats->expiring, ElementsAre(1, 2, 4, 5));
  EXPECT_EQ(stats->unexpired, 5);
  ASSERT_EQ(stats->outbox.size(), 2u);
  EXPECT_EQ(stats->outbox[0].kind, "job");
  EXPECT_EQ(stats->outbox[0].pending, 4);
  EXPECT_EQ(stats->outbox[1].kind, "webhook");
  EXPECT_EQ(stats->outbox[1].pending, 3);

  auto backlog_only = store_->Stats(now, {});
  ASSERT_TRUE(backlog_only.ok()) << backlog_only.status();
  EXPECT_TRUE(backlog_only->expiring.empty());
  EXPECT_EQ(backlog_only->unexpired, -1);
  EXPECT_EQ(backlog_only->outbox.size(), 2u);
}

TEST_P(StoreConformanceTest, OutboxClaimLeaseExpiryCompleteReschedule) {
  const absl::Time t0 = clock_.Now();
  auto ids = store_->Enqueue({OutboxItem{.kind = "job", .dedupe_key = "A", .next_attempt_at = t0},
                              OutboxItem{.kind = "job", .dedupe_key = "B", .next_attempt_at = t0},
                              OutboxItem{.kind = "job", .dedupe_key = "C",
                                         .next_attempt_at = t0 + absl::Minutes(5)},
                              OutboxItem{.kind = "webhook", .dedupe_key = "W", .next_attempt_at = t0}});
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_EQ(ids->size(), 4u);
  const int64_t a = (*ids)[0], b = (*ids)[1], c = (*ids)[2];
  // The same (kind, dedupe_key) again is not enqueued twice.
  auto again = store_->Enqueue({OutboxItem{.kind = "job", .dedupe_key = "A", .next_attempt_at = t0}});
  ASSERT_TRUE(again.ok());
  EXPECT_THAT(*again, ElementsAre(0));

  // Due now, of the kind asked for: A and B, leased to r1, one attempt each.
  auto claimed = store_->Claim(Claim(t0, "r1", 10, "job"));
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  EXPECT_THAT(Keys(*claimed), ElementsAre("A", "B"));
  for (const auto& o : *claimed) {
    EXPECT_EQ(o.attempts, 1);
    EXPECT_EQ(o.lease_owner, "r1");
    EXPECT_EQ(o.lease_until, t0 + absl::Minutes(1));
  }
  // Leased: nobody else gets them while the lease runs.
  EXPECT_TRUE(store_->Claim(Claim(t0 + absl::Seconds(59), "r2", 10, "job"))->empty());
  // The lease expires unfinished: due again, to r2, a second attempt.
  clock_.Advance(absl::Minutes(1));
  claimed = store_->Claim(Claim(clock_.Now(), "r2", 10, "job"));
  ASSERT_TRUE(claimed.ok());
  EXPECT_THAT(Keys(*claimed), ElementsAre("A", "B"));
  EXPECT_EQ((*claimed)[0].attempts, 2);
  // r1 lost them.
  absl::Status st = store_->Complete(a, "r1", clock_.Now());
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_THAT(st.message(), HasSubstr("'r2' holds it"));
  ASSERT_TRUE(store_->Complete(a, "r2", clock_.Now()).ok());
  st = store_->Complete(a, "r2", clock_.Now());
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("already complete"));
  EXPECT_EQ(store_->Complete(999999, "r2", clock_.Now()).code(), absl::StatusCode::kNotFound);

  // B failed: back in 10 minutes, with the error remembered.
  ASSERT_TRUE(store_->Reschedule(b, "r2", clock_.Now() + absl::Minutes(10), "ThrottlingException").ok());
  EXPECT_EQ(store_->Reschedule(b, "r2", clock_.Now(), "again").code(), absl::StatusCode::kFailedPrecondition);
  // C becomes due at t0 + 5 min; A never comes back; B only at +11 min.
  clock_.Advance(absl::Minutes(5));
  claimed = store_->Claim(Claim(clock_.Now(), "r3", 10, "job"));
  EXPECT_THAT(Keys(*claimed), ElementsAre("C"));
  EXPECT_EQ((*claimed)[0].id, c);
  ASSERT_TRUE(store_->Complete(c, "r3", clock_.Now()).ok());
  clock_.Advance(absl::Minutes(5));
  claimed = store_->Claim(Claim(clock_.Now(), "r3", 10, "job"));
  ASSERT_EQ(claimed->size(), 1u);
  EXPECT_EQ((*claimed)[0].id, b);
  EXPECT_EQ((*claimed)[0].attempts, 3);
  EXPECT_EQ((*claimed)[0].last_error, "ThrottlingException");
  // The other kind was never touched by these claims; any kind gets it.
  EXPECT_THAT(Keys(*store_->Claim(Claim(clock_.Now(), "r4"))), ElementsAre("W"));

  EXPECT_EQ(store_->Claim(Claim(t0, "")).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Claim(Claim(t0, "r", 0)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Enqueue({OutboxItem{}}).status().code(), absl::StatusCode::kInvalidArgument);
}

// Two handles (two processes, two replicas) claiming the same outbox at once never both get an item.
TEST_P(StoreConformanceTest, TwoClaimersNeverGetTheSameItem) {
  std::vector<OutboxItem> items;
  for (int i = 0; i < 300; ++i) items.push_back(OutboxItem{.kind = "k", .payload = absl::StrCat(i)});
  ASSERT_TRUE(store_->Enqueue(items).ok());
  auto second = backend_->Open(&clock_);
  ASSERT_TRUE(second.ok()) << second.status();
  std::vector<int64_t> got[2];
  Store* stores[2] = {store_.get(), second->get()};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      std::string owner = absl::StrCat("runner-", t);
      for (int round = 0; round < 1000; ++round) {
        auto claimed = stores[t]->Claim(Claim(clock_.Now(), owner, 7));
        if (!claimed.ok() || claimed->empty()) break;
        for (const auto& o : *claimed) {
          got[t].push_back(o.id);
          if (!stores[t]->Complete(o.id, owner, clock_.Now()).ok()) got[t].push_back(-1);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  std::set<int64_t> all;
  for (const auto& g : got) {
    for (int64_t id : g) {
      EXPECT_NE(id, -1) << "a claimed item could not be completed by its claimer";
      EXPECT_TRUE(all.insert(id).second) << "item " << id << " was claimed twice";
    }
  }
  EXPECT_EQ(all.size(), 300u);
}

// ---- Revocation and CRLs (revocation_store.h) ----

RevokeRequest Revocation(const std::string& serial, int reason, int64_t at_seconds) {
  return RevokeRequest{.issuer_id = "ISSUER",
                       .serial_hex = serial,
                       .reason = reason,
                       .at = absl::FromUnixSeconds(at_seconds),
                       .data = absl::StrCat("{\"reason\":", reason, "}")};
}

// Revoking marks the record (status, time, reason), appends one REVOKED event with the certificate's station and
// profile, and counts the revocation, visible to another handle (another process).
TEST_P(StoreConformanceTest, RevokeMarksTheRecordAndAppendsARevokedEvent) {
  ASSERT_TRUE(store_->RecordBatch(Batch{.entries = {Entry("0A", "a"), Entry("0B", "b")}}).ok());
  auto events_before = store_->ReadAfter(0, 100);
  ASSERT_TRUE(events_before.ok());
  auto revoked = store_->Revoke(Revocation("0A", 1, 1700000100));
  ASSERT_TRUE(revoked.ok()) << revoked.status();
  EXPECT_FALSE(revoked->already_revoked);
  EXPECT_EQ(revoked->record.status, CertificateStatus::kRevoked);
  EXPECT_EQ(revoked->record.revoked_at, 1700000100);
  EXPECT_EQ(revoked->record.revocation_reason, 1);

  auto other = backend_->Open(&clock_);
  ASSERT_TRUE(other.ok()) << other.status();
  auto found = (*other)->FindBySerial("ISSUER", "0A");
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ((*found)->status, CertificateStatus::kRevoked);
  EXPECT_EQ((*found)->revoked_at, 1700000100);
  EXPECT_EQ((*found)->revocation_reason, 1);
  auto untouched = (*other)->FindBySerial("ISSUER", "0B");
  ASSERT_TRUE(untouched.ok() && untouched->has_value());
  EXPECT_EQ((*untouched)->status, CertificateStatus::kValid);
  EXPECT_EQ((*untouched)->revocation_reason, -1);

  auto events = (*other)->ReadAfter(events_before->empty() ? 0 : events_before->back().id, 100);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].type, kEventRevoked);
  EXPECT_EQ((*events)[0].serial_hex, "0A");
  EXPECT_EQ((*events)[0].station, "station-1");
  EXPECT_EQ((*events)[0].profile, "device");
  EXPECT_EQ((*events)[0].time, absl::FromUnixSeconds(1700000100));
  EXPECT_EQ((*events)[0].data, "{\"reason\":1}");

  auto state = (*other)->GetCrlState("ISSUER");
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->revocations, 1);
  EXPECT_EQ(state->latest_number, 0);
}

// A second revocation (another reason, a later time) reports the first and changes nothing: no event, no count.
TEST_P(StoreConformanceTest, ASecondRevokeReportsTheFirstAndChangesNothing) {
  ASSERT_TRUE(store_->RecordBatch(Batch{.entries = {Entry("0A", "a")}}).ok());
  ASSERT_TRUE(store_->Revoke(Revocation("0A", 1, 1700000100)).ok());
  auto events_before = store_->ReadAfter(0, 100);
  ASSERT_TRUE(events_before.ok());
  auto again = store_->Revoke(Revocation("0A", 4, 1700000999));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->already_revoked);
  EXPECT_EQ(again->record.revoked_at, 1700000100);
  EXPECT_EQ(again->record.revocation_reason, 1);
  auto events = store_->ReadAfter(0, 100);
  ASSERT_TRUE(events.ok());
  EXPECT_EQ(events->size(), events_before->size());
  auto state = store_->GetCrlState("ISSUER");
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->revocations, 1);
}

TEST_P(StoreConformanceTest, RevokingAnUnknownSerialIsNotFoundAndWritesNothing) {
  ASSERT_TRUE(store_->RecordBatch(Batch{.entries = {Entry("0A", "a")}}).ok());
  auto events_before = store_->ReadAfter(0, 100);
  ASSERT_TRUE(events_before.ok());
  for (RevokeRequest r : {Revocation("0C", 1, 5), Revocation("0A", 1, 5)}) {
    if (r.serial_hex == "0A") r.issuer_id = "OTHER";  // the serial exists, but under another issuer
    auto revoked = store_->Revoke(r);
    ASSERT_FALSE(revoked.ok());
    EXPECT_EQ(revoked.status().code(), absl::StatusCode::kNotFound) << revoked.status();
    EXPECT_THAT(revoked.status().message(), HasSubstr(r.serial_hex));
  }
  auto events = store_->ReadAfter(0, 100);
  ASSERT_TRUE(events.ok());
  EXPECT_EQ(events->size(), events_before->size());
  auto state = store_->GetCrlState("ISSUER");
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->revocations, 0);
  auto found = store_->FindBySerial("ISSUER", "0A");
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ((*found)->status, CertificateStatus::kValid);
}

// CRL numbers come from one sequence per issuer shared by every handle (process): strictly increasing whoever
// asks, and a snapshot lists exactly the revocations counted when its number was taken.
TEST_P(StoreConformanceTest, CrlNumbersGrowAcrossHandlesAndSnapshotsMatchTheirCount) {
  ASSERT_TRUE(store_->RecordBatch(Batch{.entries = {Entry("0A", "a"), Entry("0B", "b"), Entry("0C", "c")}}).ok());
  auto other = backend_->Open(&clock_);
  ASSERT_TRUE(other.ok()) << other.status();
  auto first = store_->BeginCrl("ISSUER");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->number, 1);
  EXPECT_EQ(first->revocations, 0);
  EXPECT_TRUE(first->entries.empty());
  ASSERT_TRUE(store_->Revoke(Revocation("0B", 0, 1700000200)).ok());
  ASSERT_TRUE((*other)->Revoke(Revocation("0C", 5, 1700000300)).ok());
  auto second = (*other)->BeginCrl("ISSUER");
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->number, 2);
  EXPECT_EQ(second->revocations, 2);
  ASSERT_EQ(second->entries.size(), 2u);
  std::map<std::string, std::pair<int64_t, int>> entries;
  for (const auto& e : second->entries) entries[e.serial_hex] = {e.revoked_at, e.reason};
  EXPECT_EQ(entries["0B"], std::make_pair(int64_t{1700000200}, 0));
  EXPECT_EQ(entries["0C"], std::make_pair(int64_t{1700000300}, 5));
  auto third = store_->BeginCrl("ISSUER");
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(third->number, 3);
  // Another issuer has its own sequence.
  auto elsewhere = store_->BeginCrl("OTHER");
  ASSERT_TRUE(elsewhere.ok());
  EXPECT_EQ(elsewhere->number, 1);
  EXPECT_TRUE(elsewhere->entries.empty());

  // Many handles allocating at once never get the same number.
  std::vector<std::unique_ptr<Store>> stores;
  for (int t = 0; t < 3; ++t) {
    auto s = backend_->Open(&clock_);
    ASSERT_TRUE(s.ok());
    stores.push_back(*std::move(s));
  }
  std::vector<std::vector<int64_t>> got(stores.size());
  std::vector<std::thread> threads;
  for (size_t t = 0; t < stores.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        auto snap = stores[t]->BeginCrl("ISSUER");
        got[t].push_back(snap.ok() ? snap->number : -1);
      }
    });
  }
  for (auto& t : threads) t.join();
  std::set<int64_t> all;
  for (const auto& g : got) {
    for (size_t i = 0; i < g.size(); ++i) {
      EXPECT_GT(g[i], 3);
      if (i > 0) {
        EXPECT_GT(g[i], g[i - 1]);
      }
      EXPECT_TRUE(all.insert(g[i]).second) << "CRL number " << g[i] << " allocated twice";
    }
  }
}

// The latest saved CRL is kept (and older ones dropped); saving one older than a saved one changes nothing.
TEST_P(StoreConformanceTest, SaveCrlKeepsOnlyTheNewest) {
  auto none = store_->LatestCrl("ISSUER");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());
  auto crl = [](int64_t number) {
    return StoredCrl{.number = number,
                     .revocations = number * 10,
                     .this_update = absl::FromUnixMicros(1700000000000001 + number),
                     .next_update = absl::FromUnixSeconds(1700600000),
                     .der = absl::StrCat("crl-", number)};
  };
  auto saved = store_->SaveCrl("ISSUER", crl(2));
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_TRUE(*saved);
  saved = store_->SaveCrl("ISSUER", crl(5));
  ASSERT_TRUE(saved.ok() && *saved);
  auto other = backend_->Open(&clock_);
  ASSERT_TRUE(other.ok());
  saved = (*other)->SaveCrl("ISSUER", crl(4));  // slower process, older snapshot
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_FALSE(*saved);
  saved = (*other)->SaveCrl("ISSUER", crl(5));
  ASSERT_TRUE(saved.ok());
  EXPECT_FALSE(*saved);
  auto latest = (*other)->LatestCrl("ISSUER");
  ASSERT_TRUE(latest.ok() && latest->has_value());
  EXPECT_EQ((*latest)->number, 5);
  EXPECT_EQ((*latest)->revocations, 50);
  EXPECT_EQ((*latest)->der, "crl-5");
  EXPECT_EQ((*latest)->this_update, absl::FromUnixMicros(1700000000000006));
  EXPECT_EQ((*latest)->next_update, absl::FromUnixSeconds(1700600000));
  auto state = store_->GetCrlState("ISSUER");
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->latest_number, 5);
  auto elsewhere = store_->LatestCrl("OTHER");
  ASSERT_TRUE(elsewhere.ok());
  EXPECT_FALSE(elsewhere->has_value());
}

// ---- Renewal (issue 11) ----

std::optional<CertificateRecord> Find(Store& store, const std::string& serial) {
  auto r = store.FindBySerial("ISSUER", serial);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : std::nullopt;
}

// A successor supersedes its predecessor in its own transaction; a second successor of the same certificate (any
// request id, any requester) is refused with nothing of it written, and so is one that collides on its serial,
// which leaves the predecessor untouched.
TEST_P(StoreConformanceTest, ASuccessorSupersedesItsPredecessorAndThereIsOnlyOne) {
  ASSERT_TRUE(store_->RecordBatch(Batch{.entries = {Entry("A1", "first")}}).ok());
  // A serial collision of a successor: the predecessor stays valid.
  BatchEntry collide = Entry("A1", "renew:A1");
  collide.cert.station = "linesign:server";
  collide.cert.renews_serial = "A1";
  auto out = store_->RecordBatch(Batch{.entries = {collide}});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(*out, ElementsAre(RecordOutcome::kSerialCollision));
  EXPECT_EQ(Find(*store_, "A1")->status, CertificateStatus::kValid);
  EXPECT_EQ(Find(*store_, "A1")->renewed_by_serial, "");

  BatchEntry renewal = Entry("B1", "renew:A1");
  renewal.cert.station = "linesign:server";
  renewal.cert.renews_serial = "A1";
  out = store_->RecordBatch(Batch{.entries = {renewal}});
  ASSERT_TRUE(out.ok());
  EXPECT_THAT(*out, ElementsAre(RecordOutcome::kRecorded));
  auto a1 = Find(*store_, "A1");
  EXPECT_EQ(a1->status, CertificateStatus::kSuperseded);
  EXPECT_EQ(a1->renewed_by_serial, "B1");
  EXPECT_EQ(Find(*store_, "B1")->renews_serial, "A1");

  // Another successor of A1 (a re-key by a station) is refused and writes nothing: no certificate, no event, no
  // outbox item; a first issue in the same batch is recorded.
  BatchEntry rekey = Entry("C1", "rekey:A1");
  rekey.cert.renews_serial = "A1";
  auto before = store_->ReadAfter(0, 1000);
  out = store_->RecordBatch(Batch{.entries = {rekey, Entry("D1", "other")}});
  ASSERT_TRUE(out.ok());
  EXPECT_THAT(*out, ElementsAre(RecordOutcome::kPredecessorNotValid, RecordOutcome::kRecorded));
  EXPECT_FALSE(Find(*store_, "C1").has_value());
  EXPECT_EQ(Find(*store_, "A1")->renewed_by_serial, "B1");
  auto after = store_->ReadAfter(0, 1000);
  EXPECT_EQ(after->size(), before->size() + 2);  // D1's only: its ISSUED and NOTED
  auto claimed = store_->Claim(Claim(absl::FromUnixSeconds(1) + absl::Hours(1), "w"));
  EXPECT_THAT(Keys(*claimed), ElementsAre("A1", "B1", "D1"));  // the collision's item was never written
}

// RENEWAL_DUE once per certificate: two handles (two processes) mark the same due certificates; each is marked
// once, with one event and one outbox item; a marked, superseded or expired certificate is no longer pending.
TEST_P(StoreConformanceTest, RenewalDueIsMarkedOncePerCertificateAcrossProcesses) {
  Batch batch;
  for (int i = 0; i < 10; ++i) {
    BatchEntry e = Entry(absl::StrCat("E", i), absl::StrCat("e", i));
    e.events.clear();
    e.outbox.clear();
    e.cert.not_after = 1000 + i * 100;  // E0 expires first
    e.cert.profile = i == 9 ? "other" : "device";
    batch.entries.push_back(std::move(e));
  }
  ASSERT_TRUE(store_->RecordBatch(batch).ok());
  auto second = backend_->Open(&clock_);
  ASSERT_TRUE(second.ok()) << second.status();

  // now = 1000: E0 has expired (not_after 1000 is not > 1000); due before 1500: E1..E5.
  DueQuery q{.profile = "device", .live_after = 1000, .due_before = 1500, .limit = 100};
  auto pending = store_->FindRenewalPending(q);
  ASSERT_TRUE(pending.ok()) << pending.status();
  std::vector<std::string> serials;
  for (const auto& r : *pending) serials.push_back(r.serial_hex);
  EXPECT_THAT(serials, ElementsAre("E1", "E2", "E3", "E4", "E5"));

  auto marks = [&](const std::vector<CertificateRecord>& records) {
    std::vector<DueMark> out;
    for (const auto& r : records) {
      out.push_back(DueMark{.issuer_id = r.issuer_id,
                            .serial_hex = r.serial_hex,
                            .event = Event{.type = kEventRenewalDue, .issuer_id = r.issuer_id,
                                           .serial_hex = r.serial_hex, .time = absl::FromUnixSeconds(1000)},
                            .outbox = OutboxItem{.kind = "renewal", .dedupe_key = r.serial_hex}});
    }
    return out;
  };
  std::atomic<int> total{0};
  std::thread other([&] {
    auto n = (*second)->MarkRenewalDue(marks(*pending), absl::FromUnixSeconds(1000));
    ASSERT_TRUE(n.ok()) << n.status();
    total += *n;
  });
  auto n = store_->MarkRenewalDue(marks(*pending), absl::FromUnixSeconds(1000));
  other.join();
  ASSERT_TRUE(n.ok()) << n.status();
  total += *n;
  EXPECT_EQ(total.load(), 5);
  auto events = store_->ReadAfter(0, 1000);
  std::vector<Event> due;
  for (const Event& e : *events) {
    if (e.type == kEventRenewalDue) due.push_back(e);
  }
  EXPECT_THAT(Serials(due), ElementsAre("E1", "E2", "E3", "E4", "E5"));
  auto items = store_->Claim(Claim(absl::FromUnixSeconds(2000), "w", 100, "renewal"));
  EXPECT_THAT(Keys(*items), ElementsAre("E1", "E2", "E3", "E4", "E5"));
  EXPECT_EQ(Find(*store_, "E3")->renewal_due_at, 1000);
  // Marked ones are no longer pending; later ones become pending as time moves.
  EXPECT_TRUE(store_->FindRenewalPending(q)->empty());
  q.due_before = 1700;
  pending = store_->FindRenewalPending(q);
  ASSERT_EQ(pending->size(), 2u);
  EXPECT_EQ((*pending)[0].serial_hex, "E6");
  EXPECT_EQ(store_->FindRenewalPending(DueQuery{.limit = 0}).status().code(), absl::StatusCode::kInvalidArgument);
}

// The lifecycle filters: status as GetCertificate reports it (judged at `now` with each profile's renew_before),
// a subject substring, and paging in expiry order.
TEST_P(StoreConformanceTest, ListFiltersByStatusAndSubjectAndPagesInExpiryOrder) {
  Batch batch;
  // not_after: V* valid (far), D* renewal due, X* expired; now = 10000; device renews 1000 s before expiry,
  // "short" 10 s before.
  auto add = [&](const std::string& serial, int64_t not_after, const std::string& profile = "device") {
    BatchEntry e = Entry(serial, "r-" + serial);
    e.events.clear();
    e.outbox.clear();
    e.cert.not_after = not_after;
    e.cert.profile = profile;
    e.cert.subject = "O=Acme,CN=" + serial;
    batch.entries.push_back(std::move(e));
  };
  add("X2", 9000);
  add("V1", 20000);
  add("D1", 10500);
  add("X1", 8000);
  add("D2", 10900);
  add("V2", 10500, "short");  // within device's window but not short's
  add("V3", 30000);
  add("P1", 40000);  // superseded below
  ASSERT_TRUE(store_->RecordBatch(batch).ok());
  BatchEntry successor = Entry("P2", "renew:P1");
  successor.cert.renews_serial = "P1";
  successor.cert.not_after = 50000;
  successor.cert.subject = "O=Acme,CN=P2";
  ASSERT_TRUE(store_->RecordBatch(Batch{.entries = {successor}}).ok());

  auto collect = [&](CertificateQuery q) {
    q.now = 10000;
    q.renew_before_seconds = {{"device", 1000}, {"short", 10}};
    std::vector<std::string> serials;
    for (int pages = 0; pages < 100; ++pages) {
      auto page = store_->List(q);
      EXPECT_TRUE(page.ok()) << page.status();
      if (!page.ok()) break;
      for (const auto& r : page->records) serials.push_back(r.serial_hex);
      if (page->next_page_token.empty()) break;
      q.page_token = page->next_page_token;
    }
    return serials;
  };
  EXPECT_THAT(collect({.status = ListStatus::kExpired, .page_size = 1}), ElementsAre("X1", "X2"));
  EXPECT_THAT(collect({.status = ListStatus::kRenewalDue, .page_size = 1}), ElementsAre("D1", "D2"));
  EXPECT_THAT(collect({.status = ListStatus::kValid, .page_size = 2}), ElementsAre("V2", "V1", "V3", "P2"));
  EXPECT_THAT(collect({.status = ListStatus::kSuperseded}), ElementsAre("P1"));
  EXPECT_THAT(collect({.status = ListStatus::kRevoked}), ElementsAre());
  EXPECT_THAT(collect({.expiring_before = 10600, .page_size = 1}), ElementsAre("X1", "X2", "D1", "V2"));
  EXPECT_THAT(collect({.subject_contains = "CN=V", .page_size = 2}), ElementsAre("V1", "V2", "V3"));
  EXPECT_THAT(collect({.profile = "short", .subject_contains = "V"}), ElementsAre("V2"));

  // A token of one order is refused for another.
  auto page = store_->List({.status = ListStatus::kExpired, .now = 10000, .page_size = 1});
  ASSERT_TRUE(page.ok());
  auto mixed = store_->List({.page_size = 1, .page_token = page->next_page_token});
  EXPECT_EQ(mixed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->List({.issued_from = 0, .page_token = page->next_page_token}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// renewal_due and valid across profiles of different renew_before: each profile's range ends (or starts) at its
// own threshold, marked and unmarked certificates are both listed, and pages of any size merge the ranges in
// (not_after, id) order.
TEST_P(StoreConformanceTest, RenewalDueAndValidPagesMergeEachProfilesOwnWindow) {
  constexpr int64_t kNow = 100000;
  Batch batch;
  auto add = [&](const std::string& serial, int64_t not_after, const std::string& profile,
                 CertificateStatus status = CertificateStatus::kValid) {
    BatchEntry e = Entry(serial, "r-" + serial);
    e.events.clear();
    e.outbox.clear();
    e.cert.not_after = not_after;
    e.cert.profile = profile;
    e.cert.status = status;
    batch.entries.push_back(std::move(e));
  };
  // renew_before: device 1000 s, short 10 s, long 5000 s; "unlisted" has the default (60 days).
  add("A1", kNow + 500, "device");
  add("B3", kNow + 500, "short");  // inside device's and long's windows, not short's: not due
  add("C2", kNow + 500, "long");   // same not_after as A1: after it by id
  add("A2", kNow + 1000, "device");  // exactly at its threshold: due
  add("A3", kNow + 1001, "device");  // not due
  add("B1", kNow + 5, "short");
  add("B2", kNow + 10, "short");
  add("B4", kNow + 11, "short");  // not due
  add("C1", kNow + 4000, "long");  // marked below
  add("C3", kNow + 5001, "long");  // not due
  add("N1", kNow + 200000, "unlisted");
  add("A4", kNow + 5001, "device");  // not due; the same not_after as C3 in another profile: after it by id
  add("M1", kNow + 700, "device");  // marked below
  add("M2", kNow + 800, "short");   // marked below, but not due with short's renew_before
  add("E1", kNow - 1, "device");    // marked below, expired
  add("X1", kNow, "device");        // expired: not_after is not after now
  add("R1", kNow + 600, "device", CertificateStatus::kRevoked);
  add("S1", kNow + 8, "short", CertificateStatus::kSuperseded);
  ASSERT_TRUE(store_->RecordBatch(batch).ok());
  std::vector<DueMark> marks;
  for (const char* serial : {"C1", "M1", "M2", "E1"}) {
    marks.push_back(DueMark{.issuer_id = "ISSUER",
                            .serial_hex = serial,
                            .event = Event{.type = kEventRenewalDue, .issuer_id = "ISSUER", .serial_hex = serial,
                                           .time = absl::FromUnixSeconds(kNow - 10)}});
  }
  auto marked = store_->MarkRenewalDue(marks, absl::FromUnixSeconds(kNow - 10));
  ASSERT_TRUE(marked.ok()) << marked.status();
  ASSERT_EQ(*marked, 4);

  auto collect = [&](CertificateQuery q, ListStatus status = ListStatus::kRenewalDue) {
    q.status = status;
    q.now = kNow;
    q.renew_before_seconds = {{"device", 1000}, {"short", 10}, {"long", 5000}};
    std::vector<std::string> serials;
    for (int pages = 0; pages < 100; ++pages) {
      auto page = store_->List(q);
      EXPECT_TRUE(page.ok()) << page.status();
      if (!page.ok()) break;
      EXPECT_LE(page->records.size(), static_cast<size_t>(q.page_size));
      for (const auto& r : page->records) {
        serials.push_back(r.serial_hex);
        EXPECT_STREQ(EffectiveStatus(r, kNow, q.renew_before_seconds.count(r.profile) != 0
                                                  ? q.renew_before_seconds.at(r.profile)
                                                  : kDefaultRenewBeforeSeconds),
                     ListStatusName(status))
            << r.serial_hex;
      }
      if (page->next_page_token.empty()) break;
      q.page_token = page->next_page_token;
    }
    return serials;
  };
  for (int size : {1, 2, 3, 100}) {
    EXPECT_THAT(collect({.page_size = size}), ElementsAre("B1", "B2", "A1", "C2", "M1", "A2", "C1", "N1"))
        << "page size " << size;
  }
  EXPECT_THAT(collect({.profile = "device", .page_size = 1}), ElementsAre("A1", "M1", "A2"));
  EXPECT_THAT(collect({.profile = "short"}), ElementsAre("B1", "B2"));
  EXPECT_THAT(collect({.expiring_before = kNow + 600, .page_size = 2}), ElementsAre("B1", "B2", "A1", "C2"));

  // valid is the complement within the valid, unexpired certificates: each profile's range starts at its own
  // threshold; M2, marked when short's renew_before was longer, is valid again.
  for (int size : {1, 2, 3, 5, 100}) {
    EXPECT_THAT(collect({.page_size = size}, ListStatus::kValid),
                ElementsAre("B4", "B3", "M2", "A3", "C3", "A4")) << "page size " << size;
  }
  EXPECT_THAT(collect({.profile = "device", .page_size = 1}, ListStatus::kValid), ElementsAre("A3", "A4"));
  EXPECT_THAT(collect({.station = "station-1", .page_size = 2}, ListStatus::kValid),
              ElementsAre("B4", "B3", "M2", "A3", "C3", "A4"));
  EXPECT_THAT(collect({.station = "station-2"}, ListStatus::kValid), ElementsAre());
}


// ---- AWS IoT registrations (iot_registration_store.h) ----

IotRegistrationKey IotKey(const std::string& serial, const std::string& target = "main") {
  return IotRegistrationKey{"ISSUER", serial, target};
}

// IotEntry is a certificate whose batch entry registers it with `targets`.
BatchEntry IotEntry(const std::string& serial, const std::vector<std::string>& targets, absl::Time due) {
  BatchEntry e;
  e.cert = Certificate(serial, "req-" + serial);
  for (const std::string& t : targets) e.outbox.push_back(IotRegisterItem(IotKey(serial, t), due));
  return e;
}

IotRegistrationWrite IotWrite(int64_t outbox_id, const std::string& owner, absl::Time now, IotRegistration r) {
  return IotRegistrationWrite{.outbox_id = outbox_id, .owner = owner, .now = now, .registration = std::move(r)};
}

// The registration's outbox item in the certificate's entry records it pending in the same transaction; an entry
// that is refused (a duplicate request) records neither.
TEST_P(StoreConformanceTest, AnIotRegisterItemRecordsItsPendingRegistrationWithTheCertificate) {
  const absl::Time now = clock_.Now();
  Batch batch;
  batch.entries = {IotEntry("01", {"main", "eu"}, now), Entry("02", "plain")};
  ASSERT_TRUE(store_->RecordBatch(batch).ok());
  for (const char* target : {"main", "eu"}) {
    auto r = store_->GetIotRegistration(IotKey("01", target));
    ASSERT_TRUE(r.ok() && r->has_value()) << target << " " << r.status();
    EXPECT_EQ((*r)->state, IotRegistrationState::kPending);
    EXPECT_EQ((*r)->key, IotKey("01", target));
    EXPECT_EQ((*r)->progress, "");
    EXPECT_EQ((*r)->attempts, 0);
  }
  EXPECT_FALSE(store_->GetIotRegistration(IotKey("02"))->has_value());
  EXPECT_FALSE(store_->GetIotRegistration(IotKey("01", "other"))->has_value());

  // A retry of the same request is refused as a duplicate: no second item, no change to the registration.
  Batch retry;
  retry.entries = {IotEntry("03", {"main"}, now)};
  retry.entries[0].cert.request_id = "req-01";
  auto out = store_->RecordBatch(retry);
  ASSERT_TRUE(out.ok());
  EXPECT_THAT(*out, ElementsAre(RecordOutcome::kDuplicateRequest));
  EXPECT_FALSE(store_->GetIotRegistration(IotKey("03"))->has_value());

  auto items = store_->Claim(Claim(now, "registrar", 100, kIotRegisterOutboxKind));
  ASSERT_TRUE(items.ok());
  ASSERT_EQ(items->size(), 2u);
  auto key = ParseIotRegisterPayload((*items)[0].payload);
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ(key->serial_hex, "01");

  // An iot.register item whose payload is not a registration's is refused before anything is written.
  Batch bad;
  bad.entries = {Entry("04", "bad", kIotRegisterOutboxKind)};
  EXPECT_EQ(store_->RecordBatch(bad).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(store_->FindBySerial("ISSUER", "04")->has_value());
}

// Only the holder of the item's lease writes progress, and each write renews the lease; finishing completes the
// item, sets the state and appends the event together.
TEST_P(StoreConformanceTest, IotProgressIsWrittenOnlyByTheLeaseHolderAndFinishIsOneTransaction) {
  const absl::Time t0 = clock_.Now();
  ASSERT_TRUE(store_->RecordBatch(Batch{.entries = {IotEntry("0A", {"main"}, t0)}}).ok());
  auto items = store_->Claim(Claim(t0, "r1", 10, kIotRegisterOutboxKind));  // lease: 1 minute
  ASSERT_TRUE(items.ok() && items->size() == 1u);
  const int64_t id = (*items)[0].id;

  IotRegistration r{.key = IotKey("0A"), .progress = R"({"next":"create-thing"})", .certificate_id = "abc",
                    .certificate_arn = "arn:aws:iot:us-east-1:1:cert/abc", .thing_name = "thing-0A",
                    .policy = "device", .already_present = true};
  absl::Status st = store_->SaveIotProgress(IotWrite(id, "r2", t0, r), absl::Minutes(1));
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_THAT(st.message(), HasSubstr("'r1' holds it"));
  EXPECT_EQ(store_->GetIotRegistration(IotKey("0A"))->value().progress, "");

  // r1's save at t0 + 50 s renews the lease to t0 + 110 s: nobody else claims it at t0 + 100 s.
  ASSERT_TRUE(store_->SaveIotProgress(IotWrite(id, "r1", t0 + absl::Seconds(50), r), absl::Minutes(1)).ok());
  auto saved = store_->GetIotRegistration(IotKey("0A"));
  ASSERT_TRUE(saved.ok() && saved->has_value());
  EXPECT_EQ((*saved)->state, IotRegistrationState::kPending);
  EXPECT_EQ((*saved)->progress, r.progress);
  EXPECT_EQ((*saved)->certificate_id, "abc");
  EXPECT_EQ((*saved)->certificate_arn, r.certificate_arn);
  EXPECT_EQ((*saved)->thing_name, "thing-0A");
  EXPECT_EQ((*saved)->policy, "device");
  EXPECT_TRUE((*saved)->already_present);
  EXPECT_EQ((*saved)->updated_at, t0 + absl::Seconds(50));
  EXPECT_TRUE(store_->Claim(Claim(t0 + absl::Seconds(100), "r2", 10, kIotRegisterOutboxKind))->empty());

  // A retry: rescheduled with its error, still pending, one attempt more.
  IotRegistration failed_once = r;
  failed_once.error_code = "ServiceUnavailableException";
  failed_once.error_message = "try again";
  ASSERT_TRUE(
      store_->RetryIotRegistration(IotWrite(id, "r1", t0 + absl::Seconds(60), failed_once), t0 + absl::Seconds(70))
          .ok());
  EXPECT_EQ(store_->GetIotRegistration(IotKey("0A"))->value().attempts, 1);
  EXPECT_EQ(store_->GetIotRegistration(IotKey("0A"))->value().error_code, "ServiceUnavailableException");
  EXPECT_EQ(store_->GetIotRegistration(IotKey("0A"))->value().state, IotRegistrationState::kPending);
  EXPECT_TRUE(store_->Claim(Claim(t0 + absl::Seconds(65), "r2", 10, kIotRegisterOutboxKind))->empty());
  items = store_->Claim(Claim(t0 + absl::Seconds(70), "r2", 10, kIotRegisterOutboxKind));
  ASSERT_EQ(items->size(), 1u);
  EXPECT_THAT((*items)[0].last_error, HasSubstr("ServiceUnavailableException"));

  // r1 lost the item: it can neither save nor finish.
  EXPECT_EQ(store_->SaveIotProgress(IotWrite(id, "r1", t0 + absl::Seconds(71), r), absl::Minutes(1)).code(),
            absl::StatusCode::kFailedPrecondition);
  IotRegistration done = r;
  done.state = IotRegistrationState::kRegistered;
  done.progress = R"({"next":"done"})";
  const Event event{.type = kEventIotRegistered, .issuer_id = "ISSUER", .serial_hex = "0A", .station = "station-1",
                    .profile = "device", .time = t0 + absl::Seconds(72), .data = R"({"target":"main"})"};
  EXPECT_EQ(store_->FinishIotRegistration(IotWrite(id, "r1", t0 + absl::Seconds(72), done), event).code(),
            absl::StatusCode::kFailedPrecondition);
  auto log = store_->ReadAfter(0, 10);
  EXPECT_THAT(Log(*log), ElementsAre("ISSUED 0A"));

  ASSERT_TRUE(store_->FinishIotRegistration(IotWrite(id, "r2", t0 + absl::Seconds(72), done), event).ok());
  auto final_state = store_->GetIotRegistration(IotKey("0A"));
  EXPECT_EQ((*final_state)->state, IotRegistrationState::kRegistered);
  EXPECT_EQ((*final_state)->progress, R"({"next":"done"})");
  EXPECT_EQ((*final_state)->attempts, 1);
  log = store_->ReadAfter(0, 10);
  EXPECT_THAT(Log(*log), ElementsAre("ISSUED 0A", "IOT_REGISTERED 0A"));
  EXPECT_EQ(log->back().data, R"({"target":"main"})");
  // Complete: never claimed again, never finished twice.
  EXPECT_TRUE(store_->Claim(Claim(t0 + absl::Hours(1), "r3", 10, kIotRegisterOutboxKind))->empty());
  st = store_->FinishIotRegistration(IotWrite(id, "r2", t0 + absl::Seconds(73), done), event);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("already complete"));
  EXPECT_THAT(Log(*store_->ReadAfter(0, 10)), ElementsAre("ISSUED 0A", "IOT_REGISTERED 0A"));

  // Refusals that change nothing.
  IotRegistration pending = r;
  EXPECT_EQ(store_->FinishIotRegistration(IotWrite(id, "r2", t0, pending), event).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->SaveIotProgress(IotWrite(999999, "r2", t0, r), absl::Minutes(1)).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->SaveIotProgress(IotWrite(id, "", t0, r), absl::Minutes(1)).code(),
            absl::StatusCode::kInvalidArgument);
}

// A finished failure counts by target and error code; enqueueing existing certificates skips the registered and
// pending ones, enqueues the failed ones again (keeping their progress) and counts unknown serials.
TEST_P(StoreConformanceTest, IotCountsAndEnqueueingExistingCertificates) {
  const absl::Time t0 = clock_.Now();
  Batch batch;
  batch.entries = {IotEntry("01", {"main"}, t0), IotEntry("02", {"main"}, t0), IotEntry("03", {"main"}, t0),
                   Entry("04", "plain"), Entry("05", "plain2")};
  ASSERT_TRUE(store_->RecordBatch(batch).ok());
  auto items = store_->Claim(Claim(t0, "r", 10, kIotRegisterOutboxKind));
  ASSERT_EQ(items->size(), 3u);
  std::map<std::string, int64_t> ids;
  for (const auto& o : *items) ids[ParseIotRegisterPayload(o.payload)->serial_hex] = o.id;
  const Event registered{.type = kEventIotRegistered, .issuer_id = "ISSUER", .serial_hex = "01", .time = t0};
  ASSERT_TRUE(store_
                  ->FinishIotRegistration(IotWrite(ids["01"], "r", t0,
                                                   IotRegistration{.key = IotKey("01"),
                                                                   .state = IotRegistrationState::kRegistered,
                                                                   .progress = R"({"next":"done"})"}),
                                          registered)
                  .ok());
  const Event failed{.type = kEventIotFailed, .issuer_id = "ISSUER", .serial_hex = "02", .time = t0};
  ASSERT_TRUE(store_
                  ->FinishIotRegistration(IotWrite(ids["02"], "r", t0,
                                                   IotRegistration{.key = IotKey("02"),
                                                                   .state = IotRegistrationState::kFailed,
                                                                   .progress = R"({"next":"attach-policy"})",
                                                                   .error_code = "ResourceNotFoundException",
                                                                   .error_message = "no policy"}),
                                          failed)
                  .ok());
  auto counts = store_->CountIotRegistrations();
  ASSERT_TRUE(counts.ok()) << counts.status();
  ASSERT_EQ(counts->size(), 1u);
  EXPECT_EQ((*counts)[0].target, "main");
  EXPECT_EQ((*counts)[0].registered, 1);
  EXPECT_EQ((*counts)[0].failed, 1);
  EXPECT_EQ((*counts)[0].pending, 1);
  EXPECT_EQ((*counts)[0].failed_by_code, (std::map<std::string, int64_t>{{"ResourceNotFoundException", 1}}));
  auto failures = store_->ListIotRegistrations(
      IotRegistrationQuery{.target = "main", .state = IotRegistrationState::kFailed});
  ASSERT_TRUE(failures.ok()) << failures.status();
  ASSERT_EQ(failures->size(), 1u);
  EXPECT_EQ((*failures)[0].error_message, "no policy");
  EXPECT_EQ((*failures)[0].attempts, 1);

  const std::vector<std::string> serials = {"01", "02", "03", "04", "04", "FF"};
  auto result = store_->EnqueueIotRegistrations("ISSUER", "main", serials, t0 + absl::Seconds(1));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->enqueued, 2);  // 02 (failed) again, 04 new
  EXPECT_EQ(result->already_registered, 1);
  EXPECT_EQ(result->already_pending, 1);
  EXPECT_EQ(result->unknown_serial, 1);
  auto again = store_->GetIotRegistration(IotKey("02"));
  EXPECT_EQ((*again)->state, IotRegistrationState::kPending);
  EXPECT_EQ((*again)->progress, R"({"next":"attach-policy"})");
  EXPECT_EQ((*again)->error_code, "");
  EXPECT_EQ(store_->GetIotRegistration(IotKey("04"))->value().state, IotRegistrationState::kPending);
  EXPECT_EQ(store_->GetIotRegistration(IotKey("01"))->value().state, IotRegistrationState::kRegistered);
  EXPECT_FALSE(store_->GetIotRegistration(IotKey("FF"))->has_value());
  items = store_->Claim(Claim(t0 + absl::Seconds(1), "r", 10, kIotRegisterOutboxKind));
  std::set<std::string> due;
  for (const auto& o : *items) due.insert(ParseIotRegisterPayload(o.payload)->serial_hex);
  EXPECT_EQ(due, (std::set<std::string>{"02", "04"}));  // 03 is still leased to r
  counts = store_->CountIotRegistrations();
  EXPECT_EQ((*counts)[0].pending, 3);
  EXPECT_EQ((*counts)[0].failed, 0);

  EXPECT_EQ(store_->EnqueueIotRegistrations("ISSUER", "", serials, t0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->ListIotRegistrations(IotRegistrationQuery{.target = "main", .limit = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// However an iot.register item is written (a renewal's entry, Batch.outbox, Outbox::Enqueue), its pending
// registration is written with it; an entry that does not go in (a second successor) writes neither; a payload
// that is not a registration's is refused by every path with nothing written.
TEST_P(StoreConformanceTest, EveryWayOfWritingAnIotRegisterItemRecordsItsPendingRegistration) {
  const absl::Time t0 = clock_.Now();
  ASSERT_TRUE(store_->RecordBatch(Batch{.entries = {Entry("A1", "first"), Entry("A2", "second")}}).ok());

  // A renewal (written statement by statement on PostgreSQL) registers its successor; a second successor of A1
  // in the same batch is refused and registers nothing.
  BatchEntry renewal = IotEntry("B1", {"main"}, t0);
  renewal.cert.station = "linesign:server";
  renewal.cert.renews_serial = "A1";
  BatchEntry rekey = IotEntry("C1", {"main"}, t0);
  rekey.cert.renews_serial = "A1";
  auto out = store_->RecordBatch(Batch{.entries = {renewal, rekey}});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(*out, ElementsAre(RecordOutcome::kRecorded, RecordOutcome::kPredecessorNotValid));
  auto b1 = store_->GetIotRegistration(IotKey("B1"));
  ASSERT_TRUE(b1.ok() && b1->has_value()) << b1.status();
  EXPECT_EQ((*b1)->state, IotRegistrationState::kPending);
  EXPECT_FALSE(store_->GetIotRegistration(IotKey("C1"))->has_value());

  // Batch.outbox and Outbox::Enqueue.
  ASSERT_TRUE(store_->RecordBatch(Batch{.outbox = {IotRegisterItem(IotKey("A1", "eu"), t0)}}).ok());
  auto ids = store_->Enqueue({IotRegisterItem(IotKey("A2", "eu"), t0)});
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_EQ(ids->size(), 1u);
  EXPECT_GT((*ids)[0], 0);
  for (const char* serial : {"A1", "A2"}) {
    auto r = store_->GetIotRegistration(IotKey(serial, "eu"));
    ASSERT_TRUE(r.ok() && r->has_value()) << serial << " " << r.status();
    EXPECT_EQ((*r)->state, IotRegistrationState::kPending);
  }
  auto counts = store_->CountIotRegistrations();
  ASSERT_TRUE(counts.ok()) << counts.status();
  ASSERT_EQ(counts->size(), 2u);
  EXPECT_EQ((*counts)[0].target, "eu");
  EXPECT_EQ((*counts)[0].pending, 2);
  EXPECT_EQ((*counts)[1].target, "main");
  EXPECT_EQ((*counts)[1].pending, 1);
  EXPECT_EQ(store_->Claim(Claim(t0, "r", 100, kIotRegisterOutboxKind))->size(), 3u);

  // Payloads that are not a registration's: refused, nothing written.
  const OutboxItem bad{.kind = kIotRegisterOutboxKind, .payload = "register A2", .next_attempt_at = t0};
  EXPECT_EQ(store_->Enqueue({bad}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->RecordBatch(Batch{.outbox = {bad}}).status().code(), absl::StatusCode::kInvalidArgument);
  BatchEntry bad_renewal = Entry("B2", "renew:A2", kIotRegisterOutboxKind);
  bad_renewal.cert.renews_serial = "A2";
  EXPECT_EQ(store_->RecordBatch(Batch{.entries = {bad_renewal}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(store_->FindBySerial("ISSUER", "B2")->has_value());
  EXPECT_EQ(store_->Claim(Claim(t0, "r2", 100, kIotRegisterOutboxKind))->size(), 0u);  // only the three, leased
}

}  // namespace
}  // namespace linesign::store::testing
