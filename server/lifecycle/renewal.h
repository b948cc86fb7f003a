// Renewal (issue 11), modelled on AWS Certificate Manager's managed renewal of private certificates: a certificate
// becomes due renew_before (profile) ahead of its notAfter; the RenewalScanner marks it (RENEWAL_DUE, once) and,
// for `renewal: managed` profiles, the Renewer reissues it through the issuance core: same subject, SANs and
// public key, a new serial and a fresh validity from the profile, linked both ways with its predecessor (which
// the store supersedes in the successor's own transaction), and a RENEWED event.
//
// Exactly one successor per certificate, however many servers share the database: a renewal's requester is
// issuance::kServerIdentity with request id "renew:<serial>", so the store answers a second renewal with the
// first one's certificate; the store supersedes a predecessor only while it is valid and has no successor, so a
// re-key racing a renewal gets FailedPrecondition; and the scanner's work items are outbox items claimed under a
// lease, so two scanners do not even try the same certificate at once.
#ifndef LINESIGN_SERVER_LIFECYCLE_RENEWAL_H_
#define LINESIGN_SERVER_LIFECYCLE_RENEWAL_H_

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/issuance/batch_signer.h"
#include "server/issuance/issuance_request.h"
#include "server/profile/profile.h"
#include "server/store/certificate_store.h"
#include "server/store/outbox.h"
#include "server/store/renewal_store.h"
#include "server/tasks/background_task.h"

namespace linesign::lifecycle {

// The outbox kind of a managed renewal's work item; its payload is the serial.
inline constexpr char kRenewalOutboxKind[] = "renewal";

// CheckSuccessorAllowed says whether `record` may get a successor (renewal or re-key): FailedPrecondition with the
// reason when it is revoked (when, and the RFC 5280 reason code) or already superseded (by which serial).
absl::Status CheckSuccessorAllowed(const store::CertificateRecord& record);

// SuccessorRequest starts the IssuanceRequest of a successor of `predecessor` under `profile`: reason, predecessor,
// subject (Name DER as certified) and SANs read from its certificate; `same_key` also takes its public key (a
// renewal), otherwise the caller sets spki_der (a re-key). Internal when the recorded DER cannot be read.
absl::StatusOr<issuance::IssuanceRequest> SuccessorRequest(const store::CertificateRecord& predecessor,
                                                           std::shared_ptr<const profile::Profile> profile,
                                                           bool same_key);

// SuccessorEventData is the JSON data of RENEWED / REKEYED: {"renews":"<predecessor>","by":"<who asked>"}.
std::string SuccessorEventData(const std::string& predecessor_serial, const std::string& by);

// Renewer renews one certificate by serial. Thread-safe; everything it is given is borrowed and must outlive it.
class Renewer {
 public:
  using Done = absl::AnyInvocable<void(absl::StatusOr<store::CertificateRecord> record, bool replayed)>;
  struct Parts {
    std::string issuer_id;  // the issuing CA's: serials are unique per issuer
    store::CertificateReader* reader;
    issuance::BatchSigner* signer;
    const profile::Profiles* profiles;
  };
  explicit Renewer(Parts parts) : p_(std::move(parts)) {}

  // Renew issues the successor of `serial_hex` (upper-case hex) with the same key and calls `done` exactly once
  // (on this thread for a refusal, else on a signing worker) with the successor's record: NotFound for an
  // unknown serial, FailedPrecondition when CheckSuccessorAllowed refuses or its profile is no longer configured,
  // else the batch signer's answer (a replay when this renewal was already recorded; FailedPrecondition when
  // another successor won a race). `by` names who asked, for the RENEWED event ("renewal-scanner", an
  // administrator's identity). `admission` as BatchSigner::Submit.
  void Renew(const std::string& serial_hex, const std::string& by, Done done,
             issuance::BatchSigner::Admission admission = issuance::BatchSigner::Admission::kRefuseWhenFull);

 private:
  const Parts p_;
};

// RenewalScanner is the background task. Each round (RunOnce):
//   1. for each profile whose renewal is not off, finds the valid certificates without successor that are due
//      (not_after - renew_before <= now < not_after) and not yet marked, and marks them in one transaction per
//      `batch`, each with its RENEWAL_DUE event and, for managed profiles, a work item in the outbox;
//   2. claims up to `batch` due work items under a lease and renews each (Renewer, same key); an item whose
//      certificate needs nothing more (renewed, revoked, gone) is completed, one that failed for a reason that
//      may pass (the HSM or the store unavailable) is rescheduled with backoff.
// A certificate that expired before it was marked (the server was down) is not renewed by the scan; an
// administrator can still renew it (RenewCertificate).
class RenewalScanner final : public tasks::BackgroundTask {
 public:
  struct Options {
    absl::Duration interval = absl::Minutes(1);
    int batch = 100;
    std::string owner;                       // the lease owner: names this process
    absl::Duration lease = absl::Minutes(2);  // a work item is this process's for this long per claim
  };
  // Everything is borrowed and must outlive the scanner.
  RenewalScanner(std::string issuer_id, Renewer* renewer, store::RenewalStore* store, store::Outbox* outbox,
                 const profile::Profiles* profiles, Options options)
      : issuer_id_(std::move(issuer_id)), renewer_(renewer), store_(store), outbox_(outbox), profiles_(profiles),
        options_(std::move(options)) {}

  std::string_view name() const override { return "renewal-scanner"; }
  absl::Duration interval() const override { return options_.interval; }
  absl::Status RunOnce(absl::Time now) override;

  // MarkDue and RenewClaimed are the two steps of RunOnce; each returns how many certificates it marked / renewed.
  absl::StatusOr<int> MarkDue(absl::Time now);
  absl::StatusOr<int> RenewClaimed(absl::Time now);

 private:
  // RenewItems renews the certificates of claimed work items, completing or rescheduling each.
  absl::StatusOr<int> RenewItems(const std::vector<store::OutboxItem>& items, absl::Time now);

  const std::string issuer_id_;
  Renewer* const renewer_;              // borrowed
  store::RenewalStore* const store_;    // borrowed
  store::Outbox* const outbox_;         // borrowed
  const profile::Profiles* profiles_;   // borrowed
  const Options options_;
};

}  // namespace linesign::lifecycle

#endif  // LINESIGN_SERVER_LIFECYCLE_RENEWAL_H_
