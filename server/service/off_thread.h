// RunOffThread: an administrative call's work on the bounded executor, never on gRPC's callback threads, with its
// answer counted and the drain left once it is done or refused.
#ifndef LINESIGN_SERVER_SERVICE_OFF_THREAD_H_
#define LINESIGN_SERVER_SERVICE_OFF_THREAD_H_

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "server/service/bounded_executor.h"
#include "server/service/drain_tracker.h"
#include "server/service/rpc_counters.h"

namespace linesign::service {

// RunOffThread submits `work` to `executor`; its status finishes `reactor` (OK counted as answered, an error as
// refused with `call`). The caller has entered `drain`; it is left when the work has run, or at once when the
// executor's queue is full, in which case the call is refused with RESOURCE_EXHAUSTED and `busy_message`.
void RunOffThread(BoundedExecutor* executor, RpcCounters* counters, DrainTracker* drain,
                  grpc::ServerUnaryReactor* reactor, Rpc rpc, CallInfo call,
                  absl::AnyInvocable<absl::Status() &&> work, std::string busy_message);

}  // namespace linesign::service

#endif  // LINESIGN_SERVER_SERVICE_OFF_THREAD_H_
