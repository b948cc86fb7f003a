#include "server/service/off_thread.h"

#include <utility>

namespace linesign::service {

void RunOffThread(BoundedExecutor* executor, RpcCounters* counters, DrainTracker* drain,
                  grpc::ServerUnaryReactor* reactor, Rpc rpc, CallInfo call,
                  absl::AnyInvocable<absl::Status() &&> work, std::string busy_message) {
  auto task = [counters, drain, reactor, rpc, call, work = std::move(work)]() mutable {
    absl::Status st = std::move(work)();
    if (st.ok()) {
      counters->Answered(rpc);
      reactor->Finish(grpc::Status::OK);
    } else {
      reactor->Finish(counters->Refused(rpc, call, st));
    }
    drain->Leave();
  };
  if (!executor->TrySubmit(std::move(task))) {
    reactor->Finish(counters->Refused(rpc, call, absl::ResourceExhaustedError(std::move(busy_message))));
    drain->Leave();
  }
}

}  // namespace linesign::service
