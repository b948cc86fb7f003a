// RegistrationWatch: waiting for a certificate's AWS IoT registration to end (AwaitIotRegistration, `linesign iot
// wait`) without polling AWS and without a thread per waiter. One thread reads the store for the registrations
// waited on: at once for a new waiter, when this process's registrar says one ended (Notify), and every poll
// interval for all of them (another replica may be the one registering).
#ifndef LINESIGN_SERVER_IOT_REGISTRAR_WATCH_H_
#define LINESIGN_SERVER_IOT_REGISTRAR_WATCH_H_

#include <condition_variable>
#include <list>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <tuple>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/store/iot_registration_store.h"

namespace linesign::iot {

class RegistrationWatch {
 public:
  // Done receives the registration once it is registered or failed, or: NotFound when there is no registration
  // of that key; DeadlineExceeded (naming the pending state's attempts and last error) at the deadline;
  // Unavailable when the watch stops first.
  using Done = absl::AnyInvocable<void(absl::StatusOr<store::IotRegistration>) &&>;
  struct Options {
    absl::Duration poll = absl::Seconds(1);
    int max_waiters = 4096;
  };
  // `store` is borrowed and must outlive the watch. Starts its thread.
  RegistrationWatch(store::IotRegistrationStore* store, Options options);
  ~RegistrationWatch();  // Stop
  RegistrationWatch(const RegistrationWatch&) = delete;
  RegistrationWatch& operator=(const RegistrationWatch&) = delete;

  // Wait calls `done` exactly once, on the watch's thread, as described above; `deadline` is real time
  // (absl::Now()). ResourceExhausted (done not called) when max_waiters are waiting already; Unavailable (done
  // not called) after Stop.
  absl::Status Wait(const store::IotRegistrationKey& key, absl::Time deadline, Done done);
  // Notify says the registration `key` changed: its waiters are answered without waiting for the next poll.
  void Notify(const store::IotRegistrationKey& key);
  // Stop answers every waiter Unavailable and ends the thread. Idempotent.
  void Stop();

  int waiting() const;

 private:
  using Key = std::tuple<std::string, std::string, std::string>;
  struct Waiter {
    store::IotRegistrationKey key;
    absl::Time deadline;
    Done done;
    std::string last_state;  // for the DeadlineExceeded message
  };
  void Loop();

  store::IotRegistrationStore* const store_;  // borrowed
  const Options options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::list<Waiter> waiters_;  // guarded by mu_
  std::set<Key> dirty_;        // keys to read before the next poll; guarded by mu_
  bool stop_ = false;          // guarded by mu_
  std::thread thread_;
};

}  // namespace linesign::iot

#endif  // LINESIGN_SERVER_IOT_REGISTRAR_WATCH_H_
