// DrainTracker: the work in progress of the services, for a graceful stop, and the stream limits. Unary calls and
// administrative reads bracket themselves with Enter/Leave; a stream registers with AddStream (which enforces the
// per-identity and overall stream limits) and leaves with RemoveStream. BeginDrain refuses new work and tells
// each registered stream to Drain; WaitUntilIdle waits for what is left. Thread-safe.
#ifndef LINESIGN_SERVER_SERVICE_DRAIN_TRACKER_H_
#define LINESIGN_SERVER_SERVICE_DRAIN_TRACKER_H_

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <set>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"

namespace linesign::service {

// Drainable is something open that a drain must stop (a stream). Ref/Unref keep it alive while the tracker
// calls Drain outside its lock (the stream may be finishing on another thread meanwhile).
class Drainable {
 public:
  virtual ~Drainable() = default;
  // Drain: stop taking work, answer what was taken, finish.
  virtual void Drain() = 0;
  virtual void Ref() = 0;
  virtual void Unref() = 0;
};

class DrainTracker {
 public:
  struct Limits {
    uint32_t max_streams_per_identity;  // signer.max_streams_per_station
    uint32_t max_streams;               // limits.max_streams
  };
  explicit DrainTracker(Limits limits) : limits_(limits) {}

  // Draining is the refusal for work that arrives after BeginDrain.
  static absl::Status Draining();

  // Enter and Leave bracket work in progress (a unary signing call handed to the signer, an admin read). Enter
  // returns false, and enters nothing, once draining has begun unless `even_when_draining`.
  bool Enter(bool even_when_draining);
  void Leave();

  // AddStream registers an open stream of `identity`: Unavailable once draining has begun, ResourceExhausted
  // (naming the limit) when the identity already has max_streams_per_identity streams open or the server
  // max_streams. A stream that was refused is not registered and must not call RemoveStream.
  absl::Status AddStream(Drainable* stream, const std::string& identity);
  void RemoveStream(Drainable* stream, const std::string& identity);

  // BeginDrain refuses new work from now on and calls Drain on every registered stream (outside the lock).
  void BeginDrain();
  // WaitUntilIdle waits until nothing entered or registered is left, or until `deadline`; true when idle.
  bool WaitUntilIdle(absl::Time deadline);

  bool draining() const;
  // open_streams returns how many streams are registered.
  size_t open_streams() const;

 private:
  const Limits limits_;
  mutable std::mutex mu_;
  std::condition_variable idle_;
  bool draining_ = false;                                           // guarded by mu_
  int active_ = 0;                                                  // guarded by mu_
  std::set<Drainable*> streams_;                                    // guarded by mu_
  absl::flat_hash_map<std::string, uint32_t> streams_by_identity_;  // guarded by mu_
};

}  // namespace linesign::service

#endif  // LINESIGN_SERVER_SERVICE_DRAIN_TRACKER_H_
