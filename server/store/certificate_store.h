// Certificates in the store: the record, per-record outcomes of a batch, and the read-only queries.
#ifndef LINESIGN_SERVER_STORE_CERTIFICATE_STORE_H_
#define LINESIGN_SERVER_STORE_CERTIFICATE_STORE_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace linesign::store {

// CertificateStatus is where a certificate is in its life. Every certificate is recorded kValid; revocation and
// renewal (later) move it on.
enum class CertificateStatus {
  kValid,
  kRevoked,
  kSuperseded,  // renewed: renews_serial of its successor names it
};

// San is one subjectAltName of a record, as the CSR front rendered it: `type` is the text before the first ':'
// ("DNS", "IP Address", "URI", "email"), `value` the bytes after it, exactly as the CSR carried them (they may hold
// commas, newlines or bytes that are not UTF-8; escape them before showing or putting them in a protobuf string).
// A row written before SANs were typed reads back as one San of type kLegacySanType holding the whole old
// comma-joined text, because that text cannot be split back unambiguously.
struct San {
  std::string type;
  std::string value;
  bool operator==(const San&) const = default;
};
inline constexpr char kLegacySanType[] = "legacy";

// CertificateRecord is everything recorded about one issued certificate (DESIGN invariant 2).
struct CertificateRecord {
  int64_t id = 0;           // assigned by the store when recorded (ignored on write): the keyset paging order
  std::string issuer_id;    // hex SHA-256 of the issuing CA's SubjectPublicKeyInfo
  std::string serial_hex;   // upper-case hex, unique per issuer_id
  std::string subject;      // RFC 2253
  std::vector<San> sans;    // in the CSR's order
  int64_t not_before = 0;   // Unix seconds
  int64_t not_after = 0;
  std::string spki_sha256;  // hex SHA-256 of the certificate's SubjectPublicKeyInfo DER
  std::string csr_sha256;   // hex SHA-256 of the CSR DER: tells a retry from a reused request id
  std::string station;      // the authenticated station identity
  std::string profile;
  std::string request_id;   // unique per station
  std::string der;          // the certificate
  int64_t issued_at = 0;    // Unix seconds
  // Lifecycle (schema version 2). Written as given on record; changed later by renewal and revocation.
  CertificateStatus status = CertificateStatus::kValid;
  std::string renews_serial;     // the serial (same issuer) this certificate renews; empty for a first issue
  int64_t revoked_at = 0;        // Unix seconds; 0 unless revoked
  int revocation_reason = -1;    // RFC 5280 CRLReason code; -1 unless revoked
  // Renewal (schema version 3; ignored on write: the store keeps them).
  std::string renewed_by_serial;  // the successor (renewal or re-key) that superseded it; empty while it has none
  int64_t renewal_due_at = 0;     // Unix seconds when RENEWAL_DUE was recorded for it; 0 before
};

// RecordOutcome is what happened to one certificate of a batch.
enum class RecordOutcome {
  kRecorded,          // committed, with its events and outbox items
  kSerialCollision,   // the serial is taken for this issuer: nothing of the entry written, issue again
  kDuplicateRequest,  // (station, request_id) is already recorded: nothing of the entry written, see FindByRequest
  // The entry renews (renews_serial) a certificate that is no longer valid or already has a successor (revoked,
  // or renewed or re-keyed by someone else first): nothing of the entry written. Every certificate has at most
  // one successor, whoever issues it.
  kPredecessorNotValid,
};

// ListStatus selects certificates by their status as GetCertificate reports it (EffectiveStatus): kValid,
// kRenewalDue and kExpired are recorded as "valid" and told apart by not_after, the profile's renew_before and
// the query's `now`.
enum class ListStatus { kValid, kRenewalDue, kExpired, kSuperseded, kRevoked };

// CertificateQuery selects certificates for List. Empty / unset filters select everything; all set filters must
// hold.
struct CertificateQuery {
  std::string profile;
  std::string station;
  std::optional<int64_t> issued_from;      // issued_at >= this (Unix seconds)
  std::optional<int64_t> issued_before;    // issued_at < this
  std::optional<int64_t> expiring_before;  // not_after < this
  // Lifecycle filters (issue 11).
  std::optional<ListStatus> status;
  std::string subject_contains;            // a substring of the RFC 2253 subject, byte for byte
  int64_t now = 0;                         // Unix seconds: what kValid, kRenewalDue and kExpired are judged at
  // renew_before by profile name, in seconds; a profile not listed uses kDefaultRenewBeforeSeconds.
  std::map<std::string, int64_t> renew_before_seconds;
  int page_size = 100;                     // 1 to kMaxPageSize; 0 means 100
  std::string page_token;                  // empty for the first page, else a CertificatePage::next_page_token
};

inline constexpr int kMaxPageSize = 1000;
// The renew_before of a profile that does not say (60 days, like AWS Certificate Manager's managed renewal).
inline constexpr int64_t kDefaultRenewBeforeSeconds = 60 * 24 * 3600;
// A subject_contains query alone walks the certificates in id order and looks at most this many ids per page
// (the page may then be short, or empty, with a next_page_token): no page reads the whole table.
inline constexpr int64_t kSubjectScanIds = 100000;

// CertificatePage is one page of a List: in recording order (ascending id), or with a status of kValid,
// kRenewalDue or kExpired or with expiring_before in expiry order (ascending not_after, then id), or else with an
// issued range in issue order (ascending issued_at, then id).
struct CertificatePage {
  std::vector<CertificateRecord> records;
  std::string next_page_token;  // empty when this is the last page
};

// CertificateReader: read-only queries, safe from any thread; they never wait behind a batch being written.
class CertificateReader {
 public:
  virtual ~CertificateReader() = default;
  // FindBySerial returns the record of `serial_hex` under `issuer_id`, or nullopt.
  virtual absl::StatusOr<std::optional<CertificateRecord>> FindBySerial(const std::string& issuer_id,
                                                                        const std::string& serial_hex) = 0;
  // FindByRequest returns the record of (station, request_id), or nullopt.
  virtual absl::StatusOr<std::optional<CertificateRecord>> FindByRequest(const std::string& station,
                                                                         const std::string& request_id) = 0;
  // List returns a page of the certificates `query` selects. Paging is by keyset (the last id returned), so it is
  // stable while certificates are being recorded: every certificate recorded before the first page appears
  // exactly once across the pages; ones recorded meanwhile may or may not. InvalidArgument for a page size out of
  // range or a page token this store did not return.
  virtual absl::StatusOr<CertificatePage> List(const CertificateQuery& query) = 0;
  // Count returns the number of recorded certificates.
  virtual absl::StatusOr<int64_t> Count() = 0;
};

// StatusName returns "valid", "revoked" or "superseded" (the stored spelling).
const char* StatusName(CertificateStatus status);

// EffectiveStatus is a record's status at `now` (Unix seconds) under a profile renewing `renew_before_seconds`
// before expiry: "revoked" and "superseded" as recorded; otherwise "expired" from not_after on, "renewal_due"
// from not_after - renew_before on, else "valid".
const char* EffectiveStatus(const CertificateRecord& record, int64_t now, int64_t renew_before_seconds);
// ListStatusName / ParseListStatus: the same spellings ("valid", "renewal_due", "expired", "superseded",
// "revoked"); ParseListStatus returns nullopt for anything else.
const char* ListStatusName(ListStatus status);
std::optional<ListStatus> ParseListStatus(const std::string& name);

}  // namespace linesign::store

#endif  // LINESIGN_SERVER_STORE_CERTIFICATE_STORE_H_
