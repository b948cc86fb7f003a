// CrlPublisher: keeps the issuing CA's current full CRL — in memory for readers (GetCrl, the HTTP listener) and
// in the store, so a restarted server serves it at once and its number continues.
//
// Its background task ("crl-publisher") looks at the store's small revocation state every poll interval and
// makes a new CRL when (a) there is none, (b) a revocation was recorded since the current one was made — by this
// process or another on the same database — or (c) less than `refresh_before` is left until its nextUpdate. New
// CRLs are at least `min_interval` apart, so a burst of revocations is coalesced into a few CRLs; a CRL made by
// another process is adopted instead of making one more. CRL numbers come from the store (BeginCrl), strictly
// increasing across restarts and processes, and a higher number never lists fewer revocations.
#ifndef LINESIGN_SERVER_REVOCATION_CRL_PUBLISHER_H_
#define LINESIGN_SERVER_REVOCATION_CRL_PUBLISHER_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/revocation/crl_builder.h"
#include "server/store/revocation_store.h"
#include "server/tasks/background_task.h"

namespace linesign::revocation {

// PublishedCrl is one signed CRL and what a reader needs to know about it.
struct PublishedCrl {
  std::string der;
  int64_t number = 0;
  absl::Time this_update = absl::UnixEpoch();
  absl::Time next_update = absl::UnixEpoch();
};

class CrlPublisher {
 public:
  struct Options {
    absl::Duration validity = absl::Hours(7 * 24);     // nextUpdate - thisUpdate
    absl::Duration refresh_before = absl::Hours(84);   // make a new one when less than this is left
    absl::Duration min_interval = absl::Seconds(1);    // at most one new CRL per this long (coalescing)
  };

  // Create loads the latest CRL the store holds for the CA (if any); the first Refresh (the task's first round,
  // run by TaskRunner::Start before the server takes calls) makes one when there is none or it is due. Everything
  // is borrowed and must outlive the publisher. InvalidArgument for options that do not satisfy
  // 0 < refresh_before < validity and min_interval > 0; Unavailable when the store cannot be read.
  static absl::StatusOr<std::unique_ptr<CrlPublisher>> Create(const CrlBuilder* builder,
                                                             store::RevocationStore* store, Options options);

  // Current returns the current CRL. Unavailable ("no CRL has been made yet: …" with the last failure) before
  // the first one exists. It is returned even past its nextUpdate when no newer one could be made (the HSM is
  // down): the reader decides what a stale CRL means; the task keeps trying and logs why it fails.
  absl::StatusOr<PublishedCrl> Current() const;
  // CurrentDer returns Current()'s DER: what the HTTP listener serves (application/pkix-crl).
  absl::StatusOr<std::string> CurrentDer() const;
  // CurrentHeader returns Current() without its DER (empty): number and times, cheap for metrics.
  absl::StatusOr<PublishedCrl> CurrentHeader() const;

  // Refresh is one round of the task at `now` (see the file comment): it may adopt a newer stored CRL or make a
  // new one. Errors of the store or the signer are returned (the task logs them) and leave the current CRL.
  absl::Status Refresh(absl::Time now);

  // generations returns how many CRLs this process has made (adopted ones not counted).
  int64_t generations() const;

  // MakeTask returns the background task that calls Refresh every poll interval (min_interval, at most 250 ms).
  std::unique_ptr<tasks::BackgroundTask> MakeTask();

 private:
  CrlPublisher(const CrlBuilder* builder, store::RevocationStore* store, Options options)
      : builder_(builder), store_(store), options_(options) {}
  absl::Status Generate(absl::Time now);
  void Adopt(const store::StoredCrl& crl);  // requires mu_

  const CrlBuilder* const builder_;      // borrowed
  store::RevocationStore* const store_;  // borrowed
  const Options options_;
  std::mutex generate_mu_;  // one Refresh at a time (the task, or a test calling it)
  mutable std::mutex mu_;
  std::optional<PublishedCrl> current_;  // guarded by mu_
  int64_t current_revocations_ = 0;      // the revocation count current_ reflects; guarded by mu_
  std::string last_error_;               // guarded by mu_
  int64_t generations_ = 0;              // guarded by mu_
  std::optional<absl::Time> last_generated_;  // when this process last made one; guarded by generate_mu_
};

}  // namespace linesign::revocation

#endif  // LINESIGN_SERVER_REVOCATION_CRL_PUBLISHER_H_
