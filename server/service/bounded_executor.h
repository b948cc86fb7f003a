// BoundedExecutor runs tasks on a fixed pool of threads, with at most `max_pending` tasks accepted and not yet
// finished (running or queued). TrySubmit refuses a task beyond that instead of queueing it or starting a thread:
// the caller answers RESOURCE_EXHAUSTED. Used for administrative reads, which must never run on a gRPC callback
// thread nor start a thread per call. The destructor runs every task already accepted, then joins the threads.
#ifndef LINESIGN_SERVER_SERVICE_BOUNDED_EXECUTOR_H_
#define LINESIGN_SERVER_SERVICE_BOUNDED_EXECUTOR_H_

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"

namespace linesign::service {

class BoundedExecutor {
 public:
  // `threads` >= 1 and `max_pending` >= threads.
  BoundedExecutor(int threads, size_t max_pending);
  ~BoundedExecutor();
  BoundedExecutor(const BoundedExecutor&) = delete;
  BoundedExecutor& operator=(const BoundedExecutor&) = delete;

  // TrySubmit accepts `task` to run on a pool thread, or returns false (and drops it) when max_pending tasks are
  // accepted and not finished yet, or the executor is being destroyed.
  bool TrySubmit(absl::AnyInvocable<void() &&> task);

  size_t max_pending() const { return max_pending_; }
  // pending returns the tasks accepted and not yet finished.
  size_t pending() const;

 private:
  void Run();

  const size_t max_pending_;
  mutable std::mutex mu_;
  std::condition_variable ready_;
  std::deque<absl::AnyInvocable<void() &&>> queue_;  // guarded by mu_
  size_t pending_ = 0;                               // guarded by mu_; queued + running
  bool stopping_ = false;                            // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace linesign::service

#endif  // LINESIGN_SERVER_SERVICE_BOUNDED_EXECUTOR_H_
