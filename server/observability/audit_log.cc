#include "server/observability/audit_log.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <atomic>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "nlohmann/json.hpp"

namespace linesign::audit {

absl::StatusOr<std::unique_ptr<AuditLog>> AuditLog::Open(const std::string& path) {
  std::unique_ptr<AuditLog> log(new AuditLog());
  log->path_ = path;
  if (path.empty()) return log;
  log->fd_ = open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (log->fd_ < 0) {
    return absl::InvalidArgumentError(absl::StrCat("audit.file: cannot open ", path, ": ", strerror(errno)));
  }
  return log;
}

absl::Status AuditLog::Reopen() {
  if (fd_ < 0) return absl::OkStatus();
  int fd = open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("audit.file: cannot open ", path_, ": ", strerror(errno)));
  // dup2 replaces fd_ in one step: a concurrent write goes wholly to the old file or wholly to the new one.
  int rc = dup3(fd, fd_, O_CLOEXEC);
  int saved = errno;
  close(fd);
  if (rc < 0) return absl::UnavailableError(absl::StrCat("audit.file: cannot switch to ", path_, ": ", strerror(saved)));
  return absl::OkStatus();
}

AuditLog::~AuditLog() {
  if (fd_ >= 0) close(fd_);
}

std::string AuditLog::Json(const Entry& e) {
  nlohmann::ordered_json j;
  j["time"] = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", e.time, absl::UTCTimeZone());
  j["rpc"] = e.rpc;
  j["identity"] = e.identity;
  j["peer"] = e.peer;
  if (!e.profile.empty()) j["profile"] = e.profile;
  if (!e.request_id.empty()) j["request_id"] = e.request_id;
  j["outcome"] = e.outcome;
  j["code"] = e.code;
  if (!e.serial_hex.empty()) j["serial"] = e.serial_hex;
  if (!e.subject.empty()) j["subject"] = e.subject;
  if (!e.reason.empty()) j["reason"] = e.reason;
  // Station-supplied text (request ids, subjects) may hold invalid UTF-8: replace it rather than fail.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void AuditLog::Record(const Entry& entry) {
  std::string line = Json(entry);
  // With a file, the log repeats only what an operator watching it must see: refusals and failures. Echoing every
  // issued certificate as well would be a second write per certificate at line rate, and flood the journal.
  if (fd_ < 0 || (entry.outcome != "issued" && entry.outcome != "replayed")) LogInfo("audit ", line);
  if (fd_ < 0) return;
  line.push_back('\n');
  ssize_t n = write(fd_, line.data(), line.size());
  if (n != static_cast<ssize_t>(line.size())) {
    static std::atomic<int64_t> last_warning{0};
    int64_t now = absl::ToUnixSeconds(absl::Now());
    int64_t prev = last_warning.load();
    if (now - prev >= 60 && last_warning.compare_exchange_strong(prev, now)) {
      LogError("audit.file ", path_, ": write failed: ", n < 0 ? strerror(errno) : "short write");
    }
  }
}

}  // namespace linesign::audit
