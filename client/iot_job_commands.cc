#include "client/iot_job_commands.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/openssl_util.h"
#include "common/utf8.h"
#include "linesign/v1/iot.grpc.pb.h"

namespace linesign::client {
namespace {

using Clock = std::chrono::steady_clock;

int Fail(const std::string& what, const grpc::Status& st) {
  std::cerr << "linesign: iot " << what << " failed: " << StatusCodeName(st.error_code()) << ": "
            << st.error_message() << "\n";
  return 1;
}

void Deadline(grpc::ClientContext* ctx, int seconds) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
}

// Totals is a job's progress, summed over its GetIotRegistrations calls.
struct Totals {
  int64_t pending = 0, registered = 0, already_present = 0, failed = 0, not_enqueued = 0;
  std::vector<v1::IotRegistrationFailure> failures;
};

absl::StatusOr<Totals> Poll(v1::IotAdministration::Stub* stub, const IotJobOptions& o,
                            const std::vector<std::string>& serials, grpc::Status* st) {
  Totals t;
  for (size_t i = 0; i < serials.size(); i += kSerialsPerCall) {
    v1::GetIotRegistrationsRequest req;
    req.set_target(o.target);
    for (size_t j = i; j < std::min(serials.size(), i + kSerialsPerCall); ++j) req.add_serials_hex(serials[j]);
    v1::IotRegistrationsSummary s;
    grpc::ClientContext ctx;
    Deadline(&ctx, o.timeout_s);
    *st = stub->GetIotRegistrations(&ctx, req, &s);
    if (!st->ok()) return absl::UnavailableError("GetIotRegistrations");
    t.pending += s.pending();
    t.registered += s.registered();
    t.already_present += s.already_present();
    t.failed += s.failed();
    t.not_enqueued += s.not_enqueued();
    for (const auto& f : s.failures()) t.failures.push_back(f);
  }
  return t;
}

std::string Duration(double seconds) {
  if (seconds < 0 || seconds > 1e7) return "?";
  int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s / 60) % 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

// Rate measures finished registrations per second over the last `window` of samples.
class Rate {
 public:
  void Add(Clock::time_point t, int64_t finished) {
    samples_.emplace_back(t, finished);
    while (samples_.size() > 2 && t - samples_.front().first > std::chrono::seconds(15)) samples_.pop_front();
  }
  double PerSecond() const {
    if (samples_.size() < 2) return 0;
    double dt = std::chrono::duration<double>(samples_.back().first - samples_.front().first).count();
    return dt > 0 ? (samples_.back().second - samples_.front().second) / dt : 0;
  }

 private:
  std::deque<std::pair<Clock::time_point, int64_t>> samples_;
};

int RunRegister(const IotJobOptions& o, v1::IotAdministration::Stub* stub) {
  if (o.serials_file.empty() == o.profile.empty()) {
    std::cerr << "linesign: iot register: give --serials FILE or --profile NAME (one of them)\n";
    return 2;
  }
  if (!o.issued_since.empty() && o.profile.empty()) {
    std::cerr << "linesign: iot register: --issued-since selects with --profile only\n";
    return 2;
  }
  v1::EnqueueIotRegistrationsResponse total;
  std::vector<std::string> followed;  // the serials the job follows
  auto add = [&](const v1::EnqueueIotRegistrationsResponse& r) {
    total.set_enqueued(total.enqueued() + r.enqueued());
    total.set_already_registered(total.already_registered() + r.already_registered());
    total.set_already_pending(total.already_pending() + r.already_pending());
    total.set_unknown_serial(total.unknown_serial() + r.unknown_serial());
    for (const auto& s : r.serials_hex()) followed.push_back(s);
  };
  if (!o.serials_file.empty()) {
    absl::StatusOr<std::vector<std::string>> serials = ReadSerialsFile(o.serials_file);
    if (!serials.ok()) {
      std::cerr << "linesign: iot register: " << serials.status().message() << "\n";
      return 1;
    }
    for (size_t i = 0; i < serials->size(); i += kSerialsPerCall) {
      v1::EnqueueIotRegistrationsRequest req;
      req.set_target(o.target);
      for (size_t j = i; j < std::min(serials->size(), i + kSerialsPerCall); ++j) req.add_serials_hex((*serials)[j]);
      v1::EnqueueIotRegistrationsResponse r;
      grpc::ClientContext ctx;
      Deadline(&ctx, o.timeout_s);
      grpc::Status st = stub->EnqueueIotRegistrations(&ctx, req, &r);
      if (!st.ok()) return Fail("register", st);
      add(r);
    }
  } else {
    v1::EnqueueIotRegistrationsRequest req;
    req.set_target(o.target);
    req.set_profile(o.profile);
    if (!o.issued_since.empty()) {
      absl::Time t;
      std::string err;
      if (!absl::ParseTime(absl::RFC3339_full, o.issued_since, &t, &err)) {
        std::cerr << "linesign: iot register: --issued-since '" << o.issued_since
                  << "' is not an RFC 3339 time such as 2025-01-31T00:00:00Z\n";
        return 1;
      }
      req.mutable_issued_since()->set_seconds(absl::ToUnixSeconds(t));
    }
    for (;;) {
      v1::EnqueueIotRegistrationsResponse r;
      grpc::ClientContext ctx;
      Deadline(&ctx, o.timeout_s);
      grpc::Status st = stub->EnqueueIotRegistrations(&ctx, req, &r);
      if (!st.ok()) return Fail("register", st);
      add(r);
      if (r.next_page_token().empty()) break;
      req.set_page_token(r.next_page_token());
    }
  }
  std::cout << "target " << o.target << ": " << followed.size() << " certificates: enqueued " << total.enqueued()
            << ", already registered " << total.already_registered() << ", already pending "
            << total.already_pending() << ", unknown serial " << total.unknown_serial() << std::endl;
  if (o.no_wait) return 0;

  // Follow the job until nothing of it is pending: a bar on a terminal, else a line every 10 s.
  const bool tty = isatty(STDERR_FILENO) == 1;
  const int64_t expected = static_cast<int64_t>(followed.size()) - total.unknown_serial();
  Rate rate;
  Totals t;
  auto last_line = Clock::now() - std::chrono::hours(1);
  for (;;) {
    grpc::Status st;
    absl::StatusOr<Totals> polled = Poll(stub, o, followed, &st);
    if (!polled.ok()) return Fail("register (following the job)", st);
    t = *std::move(polled);
    const auto now = Clock::now();
    const int64_t finished = t.registered + t.failed;
    rate.Add(now, finished);
    const double per_s = rate.PerSecond();
    const std::string eta = t.pending == 0 ? "0s" : per_s > 0 ? Duration(t.pending / per_s) : "?";
    if (tty) {
      constexpr int kWidth = 30;
      const int filled = expected > 0 ? static_cast<int>(kWidth * finished / expected) : kWidth;
      std::cerr << absl::StrFormat("\r[%s%s] %d/%d registered, %d failed, %.1f/s, ETA %s   ",
                                   std::string(std::clamp(filled, 0, kWidth), '#'),
                                   std::string(kWidth - std::clamp(filled, 0, kWidth), '.'), t.registered, expected,
                                   t.failed, per_s, eta)
                << std::flush;
    } else if (now - last_line >= std::chrono::seconds(10) || t.pending == 0) {
      last_line = now;
      std::cerr << absl::StrFormat("registered %d of %d, failed %d, pending %d, %.1f/s, ETA %s\n", t.registered,
                                   expected, t.failed, t.pending, per_s, eta)
                << std::flush;
    }
    if (t.pending == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(o.poll_seconds * 1000)));
  }
  if (tty) std::cerr << "\n";

  std::cout << "registered: " << t.registered - total.already_registered() << "\n"
            << "already registered before this job: " << total.already_registered() << "\n"
            << "already present in AWS IoT (found registered, confirmed the same certificate): "
            << t.already_present << "\n"
            << "failed: " << t.failed << "\n";
  std::map<std::string, std::vector<const v1::IotRegistrationFailure*>> by_code;
  for (const auto& f : t.failures) by_code[f.error_code()].push_back(&f);
  for (const auto& [code, failures] : by_code) {
    std::cout << "  " << QuoteForDisplayUnlessPlain(code) << ": " << failures.size() << "\n";
    for (size_t i = 0; i < failures.size() && i < 20; ++i) {
      std::cout << "    " << failures[i]->serial_hex() << " " << QuoteForDisplay(failures[i]->error_message())
                << " (" << failures[i]->attempts() << " attempts)\n";
    }
    if (failures.size() > 20) std::cout << "    ... and " << failures.size() - 20 << " more\n";
  }
  if (total.unknown_serial() > 0) std::cout << "unknown serials: " << total.unknown_serial() << "\n";
  return t.failed == 0 && total.unknown_serial() == 0 ? 0 : 1;
}

int RunStatus(const IotJobCommands& c, const IotJobOptions& o, v1::IotAdministration::Stub* stub) {
  v1::IotStatusRequest req;
  req.set_target(c.status_target);
  v1::IotStatusResponse resp;
  grpc::ClientContext ctx;
  Deadline(&ctx, o.timeout_s);
  grpc::Status st = stub->GetIotStatus(&ctx, req, &resp);
  if (!st.ok()) return Fail("status", st);
  if (resp.targets().empty()) std::cout << "no AWS IoT targets configured\n";
  for (const auto& t : resp.targets()) {
    std::cout << "target " << t.target() << "\n";
    if (!t.unavailable_reason().empty()) {
      std::cout << "  unavailable: " << QuoteForDisplay(t.unavailable_reason()) << "\n";
    }
    std::cout << "  backlog: " << t.pending() << "\n  registered: " << t.registered() << "\n  failed: " << t.failed()
              << "\n";
    std::map<std::string, int64_t> codes(t.failed_by_code().begin(), t.failed_by_code().end());
    for (const auto& [code, n] : codes) std::cout << "    " << QuoteForDisplayUnlessPlain(code) << ": " << n << "\n";
    if (!t.operations().empty()) {
      std::cout << absl::StrFormat("  %-30s %10s %10s %10s %10s\n", "operation", "ceiling/s", "rate/s", "calls",
                                   "throttles");
      for (const auto& op : t.operations()) {
        std::cout << absl::StrFormat("  %-30s %10.2f %10.2f %10d %10d\n", op.operation(), op.ceiling_per_second(),
                                     op.rate_per_second(), op.calls(), op.throttles());
      }
    }
  }
  return 0;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ReadSerialsFile(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("--serials ", path, ": cannot be read: ", strerror(errno)));
  }
  if (S_ISREG(st.st_mode) && st.st_size > kMaxSerialsFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat("--serials ", path, " is ", st.st_size, " bytes, more than the ",
                                                   kMaxSerialsFileBytes, " a job reads; split it"));
  }
  std::ifstream in(path);
  if (!in) return absl::PermissionDeniedError(absl::StrCat("--serials ", path, ": cannot be opened"));
  std::vector<std::string> out;
  std::set<std::string> seen;
  std::string line;
  int64_t bytes = 0;
  for (int number = 1; std::getline(in, line); ++number) {
    bytes += static_cast<int64_t>(line.size()) + 1;
    if (bytes > kMaxSerialsFileBytes) {  // not a regular file, or one that grew while read
      return absl::InvalidArgumentError(
          absl::StrCat("--serials ", path, " is more than the ", kMaxSerialsFileBytes, " bytes a job reads; split it"));
    }
    if (line.size() > static_cast<size_t>(kMaxSerialLineBytes)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", number, ": the line is ", line.size(),
                                                     " bytes long; a serial is 1 to 42 hexadecimal digits"));
    }
    absl::string_view s = absl::StripAsciiWhitespace(line);
    if (s.empty() || s[0] == '#') continue;
    if (s.size() > 42 || !std::all_of(s.begin(), s.end(), [](char c) { return absl::ascii_isxdigit(c); })) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", number, ": ", QuoteForDisplay(s.substr(0, 64)),
                                                     " is not a serial (1 to 42 hexadecimal digits)"));
    }
    std::string serial = absl::AsciiStrToUpper(s);
    if (serial.size() % 2 == 1) serial.insert(0, "0");
    while (serial.size() > 2 && serial[0] == '0' && serial[1] == '0') serial.erase(0, 2);
    if (!seen.insert(serial).second) continue;
    if (out.size() >= static_cast<size_t>(kMaxJobSerials)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", number, ": more than ", kMaxJobSerials,
                                                     " serials, the most one job takes; split the file"));
    }
    out.push_back(std::move(serial));
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat("--serials ", path, " lists no serial"));
  return out;
}

void AddIotJobCommands(CLI::App* iot, IotJobCommands* c) {
  c->register_job = iot->add_subcommand(
      "register", "Register certificates already issued with an AWS IoT target (registered ones are skipped), "
                  "showing progress until done, then a summary");
  auto* r = c->register_job;
  r->add_option("--target", c->job.target, "Target name (iot.targets[].name)")->required();
  auto* serials = r->add_option("--serials", c->job.serials_file,
                                absl::StrCat("File of serials, one hexadecimal serial per line (# comments; at most ",
                                             kMaxJobSerials, ")"));
  auto* profile = r->add_option("--profile", c->job.profile, "Every certificate issued under this profile ...");
  r->add_option("--issued-since", c->job.issued_since, "... at or after this RFC 3339 time")->needs(profile);
  serials->excludes(profile);
  r->add_flag("--no-wait", c->job.no_wait, "Enqueue and return; `linesign iot status` shows the backlog");
  r->add_option("--poll", c->job.poll_seconds, "Seconds between progress checks")->capture_default_str();
  r->add_option("--timeout", c->job.timeout_s, "Deadline of each call in seconds")->capture_default_str();
  c->status = iot->add_subcommand(
      "status", "Per AWS IoT target: backlog, registrations by state, failures by code, rate and throttles per "
                "operation");
  c->status->add_option("--target", c->status_target, "Only this target");
}

int RunIotJobCommands(const IotJobCommands& c, const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = v1::IotAdministration::NewStub(channel);
  if (c.register_job->parsed()) return RunRegister(c.job, stub.get());
  return RunStatus(c, c.job, stub.get());
}

}  // namespace linesign::client
