// The store's contract as one parameterised suite: every backend instantiates StoreConformanceTest with a
// factory for itself and must pass all of it — SQLite in sqlite/sqlite_store_test.cc, PostgreSQL (on the server
// the ctest fixture `postgres` starts, tests/pg/) in postgres/postgres_store_test.cc.
//
//   INSTANTIATE_TEST_SUITE_P(Sqlite, StoreConformanceTest,
//                            ::testing::Values(StoreBackendFactory{"Sqlite", &MakeSqliteBackend}),
//                            StoreBackendName);
#ifndef LINESIGN_SERVER_STORE_TESTING_STORE_CONFORMANCE_H_
#define LINESIGN_SERVER_STORE_TESTING_STORE_CONFORMANCE_H_

#include <functional>
#include <memory>
#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "common/testing/fake_clock.h"
#include "gtest/gtest.h"
#include "server/store/store.h"

namespace linesign::store::testing {

// StoreBackend is one fresh, empty database of the backend under test.
class StoreBackend {
 public:
  virtual ~StoreBackend() = default;
  // Open returns a new handle on this database; several handles behave like several processes (replicas).
  virtual absl::StatusOr<std::unique_ptr<Store>> Open(const Clock* clock) = 0;
  // FailOutboxInserts makes every later write of an outbox item of `kind` fail inside the database itself (a
  // trigger), so a transaction can be killed half-way through a batch.
  virtual absl::Status FailOutboxInserts(const std::string& kind) = 0;
};

struct StoreBackendFactory {
  std::string name;
  std::function<std::unique_ptr<StoreBackend>()> make;
};

// PrintTo names the backend in test output (instead of the factory's bytes).
inline void PrintTo(const StoreBackendFactory& factory, std::ostream* os) { *os << factory.name; }

inline std::string StoreBackendName(const ::testing::TestParamInfo<StoreBackendFactory>& info) {
  return info.param.name;
}

class StoreConformanceTest : public ::testing::TestWithParam<StoreBackendFactory> {
 protected:
  void SetUp() override;
  ::linesign::testing::FakeClock clock_;
  std::unique_ptr<StoreBackend> backend_;
  std::unique_ptr<Store> store_;  // on backend_, with clock_
};

// Certificate returns a record for tests: issuer "ISSUER", station "station-1", profile "device".
CertificateRecord Certificate(const std::string& serial, const std::string& request_id);

}  // namespace linesign::store::testing

#endif  // LINESIGN_SERVER_STORE_TESTING_STORE_CONFORMANCE_H_
