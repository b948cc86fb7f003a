// Store interfaces. The issuer sees only IssuanceStore ("record these certificates, find a station's earlier
// request"); read-only queries are CertificateReader. Backends: sqlite/ (embedded default); PostgreSQL later.
#ifndef LINESIGN_SERVER_STORE_STORE_H_
#define LINESIGN_SERVER_STORE_STORE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace linesign::store {

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
};

// RecordOutcome is what happened to one record of a batch.
enum class RecordOutcome {
  kRecorded,          // committed
  kSerialCollision,   // the serial is taken for this issuer: nothing written, issue again with a new serial
  kDuplicateRequest,  // (station, request_id) is already recorded: nothing written, see FindByRequest
};

class IssuanceStore {
 public:
  virtual ~IssuanceStore() = default;

  // RecordBatch writes every record it can in ONE durable transaction (committed and synced before it returns)
  // and says per record what happened; records that were not written changed nothing. A failed transaction
  // (disk full, read-only file, lost connection) is Unavailable and writes nothing at all.
  virtual absl::StatusOr<std::vector<RecordOutcome>> RecordBatch(absl::Span<const CertificateRecord> records) = 0;

  // FindByRequest returns the record of (station, request_id), or nullopt.
  virtual absl::StatusOr<std::optional<CertificateRecord>> FindByRequest(const std::string& station,
                                                                         const std::string& request_id) = 0;
};

class CertificateReader {
 public:
  virtual ~CertificateReader() = default;
  // FindBySerial returns the record of `serial_hex` under `issuer_id`, or nullopt.
  virtual absl::StatusOr<std::optional<CertificateRecord>> FindBySerial(const std::string& issuer_id,
                                                                        const std::string& serial_hex) = 0;
  // Count returns the number of recorded certificates.
  virtual absl::StatusOr<int64_t> Count() = 0;
};

}  // namespace linesign::store

#endif  // LINESIGN_SERVER_STORE_STORE_H_
