#include "server/service/bounded_executor.h"

#include <algorithm>

namespace linesign::service {

BoundedExecutor::BoundedExecutor(int threads, size_t max_pending)
    : max_pending_(std::max<size_t>(max_pending, static_cast<size_t>(std::max(threads, 1)))) {
  for (int i = 0; i < std::max(threads, 1); ++i) threads_.emplace_back([this] { Run(); });
}

BoundedExecutor::~BoundedExecutor() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  ready_.notify_all();
  for (std::thread& t : threads_) t.join();
}

bool BoundedExecutor::TrySubmit(absl::AnyInvocable<void() &&> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || pending_ >= max_pending_) return false;
    ++pending_;
    queue_.push_back(std::move(task));
  }
  ready_.notify_one();
  return true;
}

size_t BoundedExecutor::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pending_;
}

void BoundedExecutor::Run() {
  for (;;) {
    absl::AnyInvocable<void() &&> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      ready_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and every accepted task has run
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    std::move(task)();
    std::lock_guard<std::mutex> lock(mu_);
    --pending_;
  }
}

}  // namespace linesign::service
