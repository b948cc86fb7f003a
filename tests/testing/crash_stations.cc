#include "tests/testing/crash_stations.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "linesign/v1/ca.grpc.pb.h"
#include "tests/testing/certs.h"

namespace linesign::testing {

std::vector<Station> CrashStations() {
  std::vector<Station> stations(3);
  const char* names[] = {"station-1", "line1-st1", "line2-st7"};
  for (size_t i = 0; i < stations.size(); ++i) stations[i].identity = names[i];
  return stations;
}

void StreamRequests(const TestCa& ca, const std::string& address, Station* s, int fresh) {
  for (int i = 0; i < fresh; ++i) {
    std::string id = absl::StrCat(s->identity, "-", s->next++);
    s->csr_by_id[id] = Csr("ec-p256", absl::StrCat("/CN=", id));
    s->unanswered.insert(id);
  }
  std::vector<std::string> to_send(s->unanswered.begin(), s->unanswered.end());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto stub = v1::CertificateAuthority::NewStub(ca.Channel(address, s->identity));
  auto stream = stub->SignCsrStream(&ctx);
  std::thread writer([&] {
    for (const std::string& id : to_send) {
      v1::SignCsrRequest r;
      r.set_csr_der(s->csr_by_id[id]);
      r.set_request_id(id);
      if (!stream->Write(r)) return;
    }
    stream->WritesDone();
  });
  v1::SignCsrStreamResponse answer;
  size_t answered = 0;
  while (answered < to_send.size() && stream->Read(&answer)) {
    ++answered;
    if (!answer.has_certificate()) {
      s->refusals.push_back(
          absl::StrCat(answer.request_id(), ": ", answer.error().code(), " ", answer.error().message()));
      continue;
    }
    const std::string& id = answer.request_id();
    const std::string& serial = answer.certificate().serial_hex();
    ++s->answers;
    if (answer.certificate().replayed()) ++s->replays;
    auto [it, first] = s->serial_by_id.emplace(id, serial);
    if (!first && it->second != serial) {
      ++s->changed;
      ADD_FAILURE() << id << " was answered with serial " << it->second << " and later with " << serial;
    }
    s->unanswered.erase(id);
  }
  ctx.TryCancel();
  writer.join();
  stream->Finish();
}

void ExpectEveryIdReplayed(const TestCa& ca, const std::string& address, Station* s) {
  const int64_t before = s->replays;
  const size_t ids = s->serial_by_id.size();
  for (const auto& [id, serial] : s->serial_by_id) s->unanswered.insert(id);
  StreamRequests(ca, address, s, 0);
  EXPECT_EQ(s->replays - before, static_cast<int64_t>(ids)) << s->identity;
  EXPECT_TRUE(s->unanswered.empty()) << s->identity;
}

StoreCheck CheckStoreAgainstStations(const std::vector<Station>& stations,
                                     const std::map<std::string, std::string>& rows, int64_t count,
                                     int64_t distinct_serials) {
  StoreCheck c;
  std::map<std::string, std::string> received;  // "station request_id" -> serial
  for (const Station& s : stations) {
    EXPECT_TRUE(s.unanswered.empty()) << s.identity << " still has " << s.unanswered.size() << " unanswered";
    EXPECT_TRUE(s.refusals.empty()) << s.identity << " was refused " << s.refusals.size() << " times, first "
                                    << (s.refusals.empty() ? "" : s.refusals.front());
    EXPECT_EQ(s.changed, 0);
    c.answers += s.answers;
    c.replays += s.replays;
    for (const auto& [id, serial] : s.serial_by_id) received[s.identity + " " + id] = serial;
  }
  // The store: one row per (station, request id), every serial once, each the one its station was given.
  EXPECT_EQ(count, static_cast<int64_t>(rows.size())) << "a (station, request id) appears twice";
  EXPECT_EQ(distinct_serials, count) << "a serial appears twice";
  for (const auto& [key, serial] : received) {
    auto it = rows.find(key);
    if (it == rows.end()) {
      ++c.missing;
      ADD_FAILURE() << key << " was answered with serial " << serial << " but is not in the store";
    } else {
      EXPECT_EQ(it->second, serial) << key;
    }
  }
  EXPECT_EQ(c.missing, 0u);
  EXPECT_EQ(rows.size(), received.size()) << "the store holds certificates nobody asked for";
  c.received = received.size();
  c.duplicated = count - distinct_serials;
  return c;
}

std::string CrashSummary(const std::string& what, int kills, int killed_with_work_unanswered, const StoreCheck& c) {
  const int64_t final_replays = static_cast<int64_t>(c.received);
  return absl::StrCat("crash", what, ": ", kills, " SIGKILLs (", killed_with_work_unanswered,
                      " with requests unanswered), ", c.received, " certificates received, ", c.answers,
                      " answers of which ", c.replays - final_replays, " replays after a kill (and ", final_replays,
                      " in the final check), lost ", c.missing, ", duplicated ", c.duplicated);
}

}  // namespace linesign::testing
