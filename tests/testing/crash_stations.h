// Stations for the crash and fault suites: each streams requests with request ids to a server that may be killed
// (or lose its database) under it, remembers what it was answered, and resends what was not; afterwards the store
// is held to what the stations were told.
#ifndef LINESIGN_TESTS_TESTING_CRASH_STATIONS_H_
#define LINESIGN_TESTS_TESTING_CRASH_STATIONS_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "tests/testing/test_ca.h"

namespace linesign::testing {

// The crash suites' load: kCrashRounds SIGKILLs, one a round, each round kCrashPerRound new requests per station
// (plus its unanswered ones).
constexpr int kCrashRounds = 20;
constexpr int kCrashPerRound = 150;

// Station is one client's view: the CSR behind each request id, and what it was answered.
struct Station {
  std::string identity;
  std::map<std::string, std::string> csr_by_id;
  std::map<std::string, std::string> serial_by_id;  // answered with a certificate
  std::set<std::string> unanswered;                 // sent (or about to be), no certificate yet
  // Requests answered with an error instead of a certificate: "<request id>: <code> <message>" each; the id stays
  // unanswered, so the next StreamRequests sends it again.
  std::vector<std::string> refusals;
  int next = 0;
  int64_t answers = 0, replays = 0, changed = 0;
};

// CrashStations returns three stations with identities the TestCa configuration lets sign with "device".
std::vector<Station> CrashStations();

// StreamRequests sends every unanswered request of `s` and `fresh` new ones (P-256 CSRs, request ids
// "<identity>-<n>") on one SignCsrStream to `address`, reading answers as they come, until the stream ends (all
// answered, or the server died). An id answered twice with different serials is a test failure.
void StreamRequests(const TestCa& ca, const std::string& address, Station* s, int fresh);

// ExpectEveryIdReplayed resends every id `s` holds a certificate for through `address`: each must come back as a
// replay of the serial `s` holds (test failures otherwise).
void ExpectEveryIdReplayed(const TestCa& ca, const std::string& address, Station* s);

// StoreCheck is what the store held compared with what the stations were told.
struct StoreCheck {
  size_t received = 0;        // distinct (station, request id) answered with a certificate
  int64_t answers = 0;        // certificate answers, replays included
  int64_t replays = 0;
  size_t missing = 0;         // answered, but not in the store
  int64_t duplicated = 0;     // rows minus distinct serials
};

// CheckStoreAgainstStations checks the store's certificates — `rows` maps "station request_id" to the serial
// (SELECT station || ' ' || request_id, serial FROM certificates), `count` is COUNT(*), `distinct_serials`
// COUNT(DISTINCT serial) — against `stations`, with test failures for: a station left with unanswered ids or
// refusals, an id answered with two serials, a (station, request id) or serial twice in the store, a received
// certificate missing or recorded with another serial, a row nobody received.
StoreCheck CheckStoreAgainstStations(const std::vector<Station>& stations,
                                     const std::map<std::string, std::string>& rows, int64_t count,
                                     int64_t distinct_serials);

// CrashSummary is the line a crash suite prints: "crash<what>: <kills> SIGKILLs (<n> with requests unanswered),
// ... lost 0, duplicated 0", counting as replays after a kill those beyond the final check's one per id.
std::string CrashSummary(const std::string& what, int kills, int killed_with_work_unanswered, const StoreCheck& c);

}  // namespace linesign::testing

#endif  // LINESIGN_TESTS_TESTING_CRASH_STATIONS_H_
