// AuditLog: one JSON object per decision, appended to a file (O_APPEND, one write per line, so concurrent
// entries never interleave and a crash loses at most the line being written). Refusals and failures are echoed to
// the log output too; successes (issued, replayed) only when there is no file.
// Entries carry identities, addresses, names and outcomes — never a PIN, a key or a CSR.
#ifndef LINESIGN_SERVER_OBSERVABILITY_AUDIT_LOG_H_
#define LINESIGN_SERVER_OBSERVABILITY_AUDIT_LOG_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace linesign::audit {

struct Entry {
  absl::Time time;
  std::string rpc;         // "SignCsr", "SignCsrStream", "GetCertificate", ...
  std::string identity;    // the authenticated station; "" when authentication failed
  std::string peer;        // gRPC peer address, e.g. "ipv4:127.0.0.1:53012"
  std::string profile;
  std::string request_id;
  std::string outcome;     // "issued", "replayed", "refused", "failed", "allowed"
  std::string code;        // gRPC status code name
  std::string serial_hex;  // on success
  std::string subject;     // on success
  std::string reason;      // on refusal or failure
};

class AuditLog {
 public:
  // Open opens (creating 0640) `path` for appending; an empty path logs to the log output only.
  static absl::StatusOr<std::unique_ptr<AuditLog>> Open(const std::string& path);
  ~AuditLog();

  // Record writes `entry`. A failed write is reported on the log output at most once a minute.
  void Record(const Entry& entry);

  // Reopen opens the file at the configured path again (after logrotate moved it away; SIGHUP) and switches to it
  // atomically: every entry lands whole in the old file or in the new one. On an error the old file stays in use.
  absl::Status Reopen();

  // Json renders an entry as one line of JSON (no newline).
  static std::string Json(const Entry& entry);

 private:
  AuditLog() = default;
  int fd_ = -1;
  std::string path_;
};

}  // namespace linesign::audit

#endif  // LINESIGN_SERVER_OBSERVABILITY_AUDIT_LOG_H_
