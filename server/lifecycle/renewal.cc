#include "server/lifecycle/renewal.h"

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <condition_variable>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/openssl_util.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace linesign::lifecycle {
namespace {

std::string Der(int (*i2d)(const X509_NAME*, unsigned char**), const X509_NAME* v) {
  int n = i2d(v, nullptr);
  if (n <= 0) return "";
  std::string out(static_cast<size_t>(n), '\0');
  auto* p = reinterpret_cast<unsigned char*>(out.data());
  i2d(v, &p);
  return out;
}

std::string SpkiDer(const X509_PUBKEY* v) {
  int n = i2d_X509_PUBKEY(v, nullptr);
  if (n <= 0) return "";
  std::string out(static_cast<size_t>(n), '\0');
  auto* p = reinterpret_cast<unsigned char*>(out.data());
  i2d_X509_PUBKEY(v, &p);
  return out;
}

// Backoff for a renewal that failed for a reason that may pass: 10 s doubling per attempt, at most an hour.
absl::Duration Backoff(int attempts) {
  absl::Duration d = absl::Seconds(10);
  for (int i = 1; i < attempts && d < absl::Hours(1); ++i) d *= 2;
  return std::min(d, absl::Hours(1));
}

}  // namespace

absl::Status CheckSuccessorAllowed(const store::CertificateRecord& r) {
  switch (r.status) {
    case store::CertificateStatus::kValid:
      if (!r.renewed_by_serial.empty()) break;  // not reachable: a successor supersedes
      return absl::OkStatus();
    case store::CertificateStatus::kRevoked:
      return absl::FailedPreconditionError(
          absl::StrCat("certificate ", r.serial_hex, " is revoked (at ", absl::FormatTime(absl::FromUnixSeconds(r.revoked_at)),
                       ", reason code ", r.revocation_reason, "): a revoked certificate is never renewed or re-keyed; "
                       "issue a new one with SignCsr"));
    case store::CertificateStatus::kSuperseded:
      break;
  }
  return absl::FailedPreconditionError(
      absl::StrCat("certificate ", r.serial_hex, " is already superseded by ", r.renewed_by_serial,
                   ": renew or re-key the newest certificate, ", r.renewed_by_serial, ", instead"));
}

absl::StatusOr<issuance::IssuanceRequest> SuccessorRequest(const store::CertificateRecord& predecessor,
                                                           std::shared_ptr<const profile::Profile> profile,
                                                           bool same_key) {
  const auto* p = reinterpret_cast<const unsigned char*>(predecessor.der.data());
  OsslPtr<X509> cert(d2i_X509(nullptr, &p, static_cast<long>(predecessor.der.size())));
  if (cert == nullptr) {
    return absl::InternalError(absl::StrCat("the recorded certificate ", predecessor.serial_hex, " cannot be read"));
  }
  issuance::IssuanceRequest r;
  r.reason = same_key ? issuance::IssuanceRequest::Reason::kRenewal : issuance::IssuanceRequest::Reason::kRekey;
  r.predecessor_serial = predecessor.serial_hex;
  r.subject_der = Der(i2d_X509_NAME, X509_get_subject_name(cert.get()));
  r.subject_text = predecessor.subject;
  if (same_key) r.spki_der = SpkiDer(X509_get_X509_PUBKEY(cert.get()));
  int at = X509_get_ext_by_NID(cert.get(), NID_subject_alt_name, -1);
  if (at >= 0) {
    const ASN1_OCTET_STRING* value = X509_EXTENSION_get_data(X509_get_ext(cert.get(), at));
    absl::string_view names(reinterpret_cast<const char*>(ASN1_STRING_get0_data(value)), ASN1_STRING_length(value));
    if (!csr::ParseSans(names, &r.sans)) {
      return absl::InternalError(
          absl::StrCat("the subjectAltName of the recorded certificate ", predecessor.serial_hex, " cannot be read"));
    }
  }
  if (r.subject_der.empty() || (same_key && r.spki_der.empty())) {
    return absl::InternalError(absl::StrCat("the recorded certificate ", predecessor.serial_hex, " cannot be read"));
  }
  r.profile = std::move(profile);
  return r;
}

std::string SuccessorEventData(const std::string& predecessor_serial, const std::string& by) {
  nlohmann::json j = {{"renews", predecessor_serial}, {"by", by}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void Renewer::Renew(const std::string& serial_hex, const std::string& by, Done done,
                    issuance::BatchSigner::Admission admission) {
  auto record = p_.reader->FindBySerial(p_.issuer_id, serial_hex);
  if (!record.ok()) return done(record.status(), false);
  if (!record->has_value()) {
    return done(absl::NotFoundError(absl::StrCat("no certificate with serial ", serial_hex, " from this CA")), false);
  }
  const store::CertificateRecord& old = **record;
  if (auto st = CheckSuccessorAllowed(old); !st.ok()) return done(st, false);
  auto profile = p_.profiles->Find(old.profile);
  if (!profile.ok()) {
    return done(absl::FailedPreconditionError(absl::StrCat("certificate ", serial_hex, " was issued under profile '",
                                                           old.profile, "', which is no longer configured")),
                false);
  }
  auto request = SuccessorRequest(old, *std::move(profile), /*same_key=*/true);
  if (!request.ok()) return done(request.status(), false);
  request->requester = {issuance::IssuanceRequest::Requester::Kind::kServer, issuance::kServerIdentity,
                        absl::StrCat("renew:", serial_hex)};
  request->events.push_back(store::Event{.type = store::kEventRenewed, .data = SuccessorEventData(serial_hex, by)});
  issuance::SignJob job{*std::move(request), std::move(done)};
  // Submit hands `job` back only by refusing it: then its `done` was not called.
  auto shared = std::make_shared<issuance::SignJob>(std::move(job));
  issuance::SignJob submitted{shared->request, [shared](absl::StatusOr<store::CertificateRecord> r, bool replayed) {
                                shared->done(std::move(r), replayed);
                              }};
  if (auto st = p_.signer->Submit(std::move(submitted), admission); !st.ok()) shared->done(st, false);
}

absl::StatusOr<int> RenewalScanner::MarkDue(absl::Time now) {
  const int64_t now_s = absl::ToUnixSeconds(now);
  int marked = 0;
  for (const auto& profile : profiles_->All()) {
    if (profile->renewal_mode() == profile::RenewalMode::kOff) continue;
    const bool managed = profile->renewal_mode() == profile::RenewalMode::kManaged;
    store::DueQuery q{.profile = profile->name(),
                      .live_after = now_s,
                      .due_before = now_s + absl::ToInt64Seconds(profile->renew_before()),
                      .limit = options_.batch};
    // Marked certificates leave the scan's index, so each pass sees the next ones; a pass that finds fewer than
    // a batch found them all.
    while (true) {
      LINESIGN_ASSIGN_OR_RETURN(auto due, store_->FindRenewalPending(q));
      std::vector<store::DueMark> marks;
      marks.reserve(due.size());
      for (const store::CertificateRecord& r : due) {
        nlohmann::json data = {{"not_after", absl::FormatTime(absl::RFC3339_sec, absl::FromUnixSeconds(r.not_after),
                                                              absl::UTCTimeZone())},
                               {"renewal", managed ? "managed" : "notify"}};
        store::DueMark m{.issuer_id = r.issuer_id,
                         .serial_hex = r.serial_hex,
                         .event = store::Event{.type = store::kEventRenewalDue,
                                               .issuer_id = r.issuer_id,
                                               .serial_hex = r.serial_hex,
                                               .station = r.station,
                                               .profile = r.profile,
                                               .time = now,
                                               .data = data.dump()}};
        if (managed) {
          m.outbox = store::OutboxItem{.kind = kRenewalOutboxKind,
                                       .dedupe_key = absl::StrCat(r.issuer_id, ":", r.serial_hex),
                                       .payload = r.serial_hex,
                                       .next_attempt_at = now};
        }
        marks.push_back(std::move(m));
      }
      LINESIGN_ASSIGN_OR_RETURN(int n, store_->MarkRenewalDue(marks, now));
      marked += n;
      if (static_cast<int>(due.size()) < q.limit) break;
      // Every one of a full batch marked by another process meanwhile: that one is scanning too, and the next
      // FindRenewalPending no longer returns them, so this loop still ends.
    }
  }
  return marked;
}

absl::StatusOr<int> RenewalScanner::RenewClaimed(absl::Time now) {
  int renewed = 0;
  // A full claim may have left more: claim again until the due items are gone (each claim leases its items, so
  // the next one gets others).
  while (true) {
    LINESIGN_ASSIGN_OR_RETURN(auto items, outbox_->Claim(store::ClaimRequest{.kind = kRenewalOutboxKind,
                                                                              .now = now,
                                                                              .lease = options_.lease,
                                                                              .limit = options_.batch,
                                                                              .owner = options_.owner}));
    LINESIGN_ASSIGN_OR_RETURN(int n, RenewItems(items, now));
    renewed += n;
    if (static_cast<int>(items.size()) < options_.batch) return renewed;
  }
}

absl::StatusOr<int> RenewalScanner::RenewItems(const std::vector<store::OutboxItem>& items, absl::Time now) {
  if (items.empty()) return 0;
  // All of them at once: the batch signer signs and records them in a few batches.
  struct Results {
    std::mutex mu;
    std::condition_variable cv;
    size_t left;
    std::vector<absl::Status> status;
  };
  auto results = std::make_shared<Results>();
  results->left = items.size();
  results->status.resize(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    renewer_->Renew(
        items[i].payload, "renewal-scanner",
        [results, i](absl::StatusOr<store::CertificateRecord> r, bool) {
          std::lock_guard<std::mutex> lock(results->mu);
          results->status[i] = r.status();
          if (--results->left == 0) results->cv.notify_all();
        },
        // The scanner bounds what it has in flight (one batch) itself.
        issuance::BatchSigner::Admission::kAlways);
  }
  {
    std::unique_lock<std::mutex> lock(results->mu);
    results->cv.wait(lock, [&] { return results->left == 0; });
  }
  int renewed = 0;
  absl::Status first_error;
  for (size_t i = 0; i < items.size(); ++i) {
    const absl::Status& st = results->status[i];
    absl::Status done;
    if (st.ok()) {
      ++renewed;
      done = outbox_->Complete(items[i].id, options_.owner, now);
    } else if (absl::IsFailedPrecondition(st) || absl::IsNotFound(st) || absl::IsAlreadyExists(st) ||
               absl::IsInvalidArgument(st) || absl::IsInternal(st)) {
      // Nothing left to do (renewed or revoked meanwhile), or nothing a retry could change: logged, not retried.
      LogWarning("renewal of ", items[i].payload, " not done: ", st.message());
      done = outbox_->Complete(items[i].id, options_.owner, now);
    } else {
      done = outbox_->Reschedule(items[i].id, options_.owner, now + Backoff(items[i].attempts),
                                 std::string(st.message()));
      if (first_error.ok()) first_error = st;
    }
    if (!done.ok() && first_error.ok()) first_error = done;
  }
  if (!first_error.ok()) return first_error;
  return renewed;
}

absl::Status RenewalScanner::RunOnce(absl::Time now) {
  LINESIGN_ASSIGN_OR_RETURN(int marked, MarkDue(now));
  LINESIGN_ASSIGN_OR_RETURN(int renewed, RenewClaimed(now));
  if (marked > 0 || renewed > 0) LogInfo("renewal: ", marked, " certificates became due, ", renewed, " renewed");
  return absl::OkStatus();
}

}  // namespace linesign::lifecycle
