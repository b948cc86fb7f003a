#include "server/tasks/task_runner.h"

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace linesign::tasks {

TaskRunner::~TaskRunner() { Stop(); }

void TaskRunner::Start(std::unique_ptr<BackgroundTask> task) {
  auto r = std::make_unique<Running>();
  r->name = std::string(task->name());
  r->task = std::move(task);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return;
  }
  RunAndLog(*r);
  Running* raw = r.get();
  std::lock_guard<std::mutex> lock(mu_);
  if (stopped_) return;  // Stop ran meanwhile: it did not see this task, which never got a thread
  running_.push_back(std::move(r));
  raw->thread = std::thread([this, raw] { Loop(*raw); });
}

void TaskRunner::Loop(Running& r) {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    // Real time for the pause: the Clock may be a test's FakeClock that never moves.
    if (cv_.wait_for(lock, absl::ToChronoNanoseconds(r.task->interval()), [&r] { return r.stop; })) break;
    lock.unlock();
    RunAndLog(r);
    lock.lock();
    if (r.stop) break;
  }
}

void TaskRunner::RunAndLog(Running& r) {
  const absl::Time now = clock_->Now();
  absl::Status st = r.task->RunOnce(now);
  std::lock_guard<std::mutex> lock(mu_);
  if (st.ok()) {
    if (r.streak > 0) {
      LogInfo("task ", r.name, ": ok again after ", r.streak, " failed run", r.streak == 1 ? "" : "s");
    }
    r.streak = 0;
    r.unlogged = 0;
    r.last_logged = absl::InfinitePast();
    return;
  }
  ++r.failures;
  ++r.streak;
  if (r.streak == 1 || now - r.last_logged >= kLogEvery) {
    std::string suppressed =
        r.unlogged > 0 ? absl::StrCat(" (", r.unlogged, " more failure", r.unlogged == 1 ? "" : "s",
                                      " since the last report)")
                       : "";
    LogWarning("task ", r.name, ": ", st.ToString(), suppressed);
    r.unlogged = 0;
    r.last_logged = now;
  } else {
    ++r.unlogged;
  }
}

void TaskRunner::Stop() {
  std::vector<Running*> order;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return;
    stopped_ = true;
    for (auto it = running_.rbegin(); it != running_.rend(); ++it) order.push_back(it->get());
  }
  for (Running* r : order) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      r->stop = true;
    }
    cv_.notify_all();  // one condition variable for all: only the task whose flag is set leaves its wait
    if (r->thread.joinable()) r->thread.join();
    r->task->OnStop();
  }
}

int64_t TaskRunner::failures(std::string_view name) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& r : running_) {
    if (r->name == name) return r->failures;
  }
  return 0;
}

}  // namespace linesign::tasks
