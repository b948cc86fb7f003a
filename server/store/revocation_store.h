// Revocations and CRLs in the store: revoking a certificate (with its REVOKED event, in one transaction), and the
// state the CRL publisher shares between processes on one database — the CRL number sequence, a counter of
// revocations, and the latest signed CRL.
#ifndef LINESIGN_SERVER_STORE_REVOCATION_STORE_H_
#define LINESIGN_SERVER_STORE_REVOCATION_STORE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/store/certificate_store.h"

namespace linesign::store {

// kEventRevoked is the event a revocation appends to the event log (event_log.h).
inline constexpr char kEventRevoked[] = "REVOKED";

// RevokeRequest asks to revoke one certificate.
struct RevokeRequest {
  std::string issuer_id;
  std::string serial_hex;  // upper-case hex, as recorded
  int reason = 0;          // RFC 5280 CRLReason code; the caller has checked it is one linesign accepts
  absl::Time at = absl::UnixEpoch();  // the revocation time (recorded in whole seconds; the event in microseconds)
  std::string data;        // the REVOKED event's data (JSON by convention: who, why)
};

// RevokeResult is the certificate after the call.
struct RevokeResult {
  CertificateRecord record;      // status kRevoked, with revoked_at and revocation_reason
  bool already_revoked = false;  // true: it was revoked before; the FIRST revocation's time and reason, unchanged
};

// RevokedEntry is one line of a CRL.
struct RevokedEntry {
  std::string serial_hex;
  int64_t revoked_at = 0;  // Unix seconds
  int reason = 0;          // RFC 5280 CRLReason code
};

// CrlSnapshot is what one CRL is made of: its number, allocated atomically with the read of the revoked
// certificates, so a CRL with a higher number never lists fewer revocations than one with a lower number.
struct CrlSnapshot {
  int64_t number = 0;       // > every number allocated before, by any process on this database
  int64_t revocations = 0;  // the revocation counter (CrlState::revocations) the entries reflect
  std::vector<RevokedEntry> entries;  // every revoked certificate of the issuer
};

// StoredCrl is a signed CRL kept in the store, so a restarted server serves it at once.
struct StoredCrl {
  int64_t number = 0;
  int64_t revocations = 0;  // from its CrlSnapshot
  absl::Time this_update = absl::UnixEpoch();
  absl::Time next_update = absl::UnixEpoch();
  std::string der;
};

// CrlState is the small shared state a publisher polls.
struct CrlState {
  int64_t revocations = 0;    // revocations recorded for the issuer so far (only ever grows)
  int64_t latest_number = 0;  // number of the latest saved CRL, 0 for none
};

// RevocationStore is the store's revocation capability: what RevokeCertificate and the CRL publisher use. Every
// method is safe from any thread and across processes on one database.
class RevocationStore {
 public:
  virtual ~RevocationStore() = default;

  // Revoke marks the certificate (issuer_id, serial_hex) revoked with request.reason at request.at and appends a
  // kEventRevoked event (the certificate's station and profile, request.data) and counts the revocation, all in
  // ONE durable transaction. A certificate already revoked is left exactly as it is (no event, no count) and
  // returned with already_revoked. NotFound when the issuer has no such serial; Unavailable when the transaction
  // fails (nothing written).
  virtual absl::StatusOr<RevokeResult> Revoke(const RevokeRequest& request) = 0;

  // BeginCrl allocates the next CRL number of `issuer_id` and reads its revoked certificates, in one write
  // transaction (numbers are never reused, even when the CRL is never saved). Unavailable on failure.
  virtual absl::StatusOr<CrlSnapshot> BeginCrl(const std::string& issuer_id) = 0;

  // SaveCrl keeps `crl` as the issuer's latest CRL and drops older ones, unless a CRL with a number >= crl.number
  // is already saved (another process was quicker): then nothing changes and it returns false.
  virtual absl::StatusOr<bool> SaveCrl(const std::string& issuer_id, const StoredCrl& crl) = 0;

  // GetCrlState reads the issuer's revocation counter and latest saved CRL number (cheap: no DER).
  virtual absl::StatusOr<CrlState> GetCrlState(const std::string& issuer_id) = 0;

  // LatestCrl returns the issuer's latest saved CRL, or nullopt when none was saved.
  virtual absl::StatusOr<std::optional<StoredCrl>> LatestCrl(const std::string& issuer_id) = 0;
};

}  // namespace linesign::store

#endif  // LINESIGN_SERVER_STORE_REVOCATION_STORE_H_
