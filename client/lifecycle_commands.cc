#include "client/lifecycle_commands.h"

#include <google/protobuf/util/json_util.h>

#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/output.h"
#include "common/openssl_util.h"
#include "common/utf8.h"

namespace linesign::client {
namespace {

int Fail(const std::string& what) {
  std::cerr << "linesign: " << what << "\n";
  return 1;
}

int FailRpc(const std::string& command, const grpc::Status& st) {
  return Fail(command + " failed: " + StatusCodeName(st.error_code()) + ": " + st.error_message());
}

std::string Time(const google::protobuf::Timestamp& t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(t.seconds()), absl::UTCTimeZone());
}

void Deadline(grpc::ClientContext* ctx, int timeout_s) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(timeout_s));
}

// WriteSuccessor writes --out and --chain-out of renew and rekey, and says what was issued.
int Successor(const LifecycleOptions& o, const std::string& command, const v1::SuccessorResponse& r) {
  if (!o.out.empty()) {
    if (auto st = WriteOutput(o.out, r.certificate_pem()); !st.ok()) return Fail(std::string(st.message()));
  }
  if (!o.chain_out.empty()) {
    if (auto st = WriteOutput(o.chain_out, r.chain_pem()); !st.ok()) return Fail(std::string(st.message()));
  }
  if (o.json) {
    v1::SuccessorResponse shown = r;
    shown.clear_certificate_der();
    std::cout << ToJson(shown) << "\n";
  } else {
    std::cout << command << " " << r.renews_serial() << " -> " << r.serial_hex() << " not_after=" << Time(r.not_after())
              << (r.replayed() ? " (replayed: issued earlier)" : "") << "\n";
  }
  return 0;
}

}  // namespace

std::string ToJson(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(message, &out, options).ok()) return "{}";
  return out;
}

absl::StatusOr<absl::Duration> ParseWithin(const std::string& text) {
  int64_t n = 0;
  if (text.size() >= 2 && absl::SimpleAtoi(text.substr(0, text.size() - 1), &n) && n > 0) {
    switch (text.back()) {
      case 'd':
        return absl::Hours(24) * n;
      case 'h':
        return absl::Hours(n);
      case 'm':
        return absl::Minutes(n);
      case 's':
        return absl::Seconds(n);
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--expiring-within '", text, "' is not a duration such as 60d, 12h, 30m or 45s"));
}

void AddLifecycleCommands(CLI::App& app, LifecycleOptions* o, const std::function<void(CLI::App*)>& connect) {
  o->get = app.add_subcommand("get", "Administrators: a certificate's record, status, links and chain");
  connect(o->get);
  o->get->add_option("serial", o->serial, "Serial, hexadecimal")->required();
  o->get->add_option("--out", o->out, "Also write the certificate (PEM) to this file");
  o->get->add_flag("--json", o->json, "Print the record as JSON");

  o->renew = app.add_subcommand("renew", "Administrators: renew a certificate now (same key, new serial)");
  connect(o->renew);
  o->renew->add_option("serial", o->serial, "Serial, hexadecimal")->required();
  o->renew->add_option("--out", o->out, "Write the new certificate (PEM) to this file");
  o->renew->add_option("--chain-out", o->chain_out, "Write the CA chain (PEM) to this file");
  o->renew->add_flag("--json", o->json, "Print the answer as JSON");

  o->rekey = app.add_subcommand("rekey", "Re-key a certificate: its successor for the key of a new CSR");
  connect(o->rekey);
  o->rekey->add_option("serial", o->serial, "Serial, hexadecimal")->required();
  o->rekey->add_option("--csr", o->csr_path, "The new key's CSR, PEM or DER (same subject)")->required();
  o->rekey->add_option("--out", o->out, "Write the new certificate (PEM) to this file");
  o->rekey->add_option("--chain-out", o->chain_out, "Write the CA chain (PEM) to this file");
  o->rekey->add_flag("--json", o->json, "Print the answer as JSON");

  o->events = app.add_subcommand("events", "Administrators: print the event log (ISSUED, RENEWAL_DUE, RENEWED, ...)");
  connect(o->events);
  o->events->add_option("--after", o->after, "Start after this cursor (the first column of a line printed before)")
      ->capture_default_str();
  o->events->add_flag("--follow", o->follow, "Keep printing events as they happen (until interrupted)");
  o->events->add_flag("--json", o->json, "One JSON object per event");
}

void AddListLifecycleOptions(CLI::App* list, LifecycleOptions* o) {
  list->add_option("--status", o->status, "Only certificates with this status: valid, renewal_due, expired, "
                                          "superseded, revoked");
  list->add_option("--subject", o->subject, "Only certificates whose subject contains this text");
  list->add_option("--expiring-within", o->expiring_within,
                   "Only certificates whose not_after is within this long from now, e.g. 60d");
  list->add_flag("--json", o->json, "One JSON object per certificate");
}

absl::Status ApplyListLifecycleOptions(const LifecycleOptions& o, absl::Time now,
                                       v1::ListCertificatesRequest* request) {
  request->set_status(o.status);
  request->set_subject(o.subject);
  if (!o.expiring_within.empty()) {
    auto within = ParseWithin(o.expiring_within);
    if (!within.ok()) return within.status();
    request->mutable_expiring_before()->set_seconds(absl::ToUnixSeconds(now + *within));
  }
  return absl::OkStatus();
}

std::optional<int> RunLifecycleCommand(const LifecycleOptions& o, v1::Administration::Stub* admin, int timeout_s) {
  grpc::ClientContext ctx;
  if (*o.get) {
    Deadline(&ctx, timeout_s);
    v1::GetCertificateRequest req;
    req.set_serial_hex(o.serial);
    v1::GetCertificateResponse r;
    grpc::Status st = admin->GetCertificate(&ctx, req, &r);
    if (!st.ok()) return FailRpc("get", st);
    if (!o.out.empty()) {
      if (auto ws = WriteOutput(o.out, PemEncode("CERTIFICATE", r.certificate_der())); !ws.ok()) {
        return Fail(std::string(ws.message()));
      }
    }
    if (o.json) {
      r.clear_certificate_der();
      std::cout << ToJson(r) << "\n";
      return 0;
    }
    // Station-supplied text quoted and escaped, as `show` does.
    std::cout << "serial:            " << r.serial_hex() << "\nstatus:            " << r.status()
              << "\nsubject:           " << QuoteForDisplay(r.subject()) << "\n";
    for (const auto& san : r.san()) {
      std::cout << "san:               " << QuoteForDisplayUnlessPlain(san.type()) << ":"
                << QuoteForDisplay(san.raw_value().empty() ? san.value() : san.raw_value()) << "\n";
    }
    std::cout << "profile:           " << QuoteForDisplay(r.profile())
              << "\nstation:           " << QuoteForDisplay(r.station())
              << "\nrequest_id:        " << QuoteForDisplay(r.request_id())
              << "\nnot_before:        " << Time(r.not_before()) << "\nnot_after:         " << Time(r.not_after())
              << "\nissued_at:         " << Time(r.issued_at())
              << "\nrenews_serial:     " << (r.renews_serial().empty() ? "-" : r.renews_serial())
              << "\nrenewed_by_serial: " << (r.renewed_by_serial().empty() ? "-" : r.renewed_by_serial())
              << "\nrenewal_due_at:    " << (r.has_renewal_due_at() ? Time(r.renewal_due_at()) : "-") << "\n";
    return 0;
  }
  if (*o.renew) {
    Deadline(&ctx, timeout_s);
    v1::RenewCertificateRequest req;
    req.set_serial_hex(o.serial);
    v1::SuccessorResponse r;
    grpc::Status st = admin->RenewCertificate(&ctx, req, &r);
    if (!st.ok()) return FailRpc("renew", st);
    return Successor(o, "renewed", r);
  }
  if (*o.rekey) {
    Deadline(&ctx, timeout_s);
    auto csr = ReadFile(o.csr_path);
    if (!csr.ok()) return Fail(std::string(csr.status().message()));
    v1::RekeyCertificateRequest req;
    req.set_serial_hex(o.serial);
    if (csr->rfind("-----BEGIN", 0) == 0) {
      req.set_csr_pem(*csr);
    } else {
      req.set_csr_der(*csr);
    }
    v1::SuccessorResponse r;
    grpc::Status st = admin->RekeyCertificate(&ctx, req, &r);
    if (!st.ok()) return FailRpc("rekey", st);
    return Successor(o, "rekeyed", r);
  }
  if (*o.events) {
    // No deadline when following: the stream lasts until interrupted.
    if (!o.follow) Deadline(&ctx, timeout_s);
    v1::WatchEventsRequest req;
    req.set_after_cursor(o.after);
    req.set_stop_at_end(!o.follow);
    auto reader = admin->WatchEvents(&ctx, req);
    v1::WatchEventsResponse e;
    while (reader->Read(&e)) {
      if (o.json) {
        std::cout << ToJson(e) << "\n";
      } else {
        std::cout << e.cursor() << " " << Time(e.time()) << " " << e.type() << " " << e.serial_hex()
                  << " station=" << QuoteForDisplay(e.station()) << " profile=" << QuoteForDisplay(e.profile())
                  << " data=" << QuoteForDisplay(e.data()) << "\n";
      }
      std::cout.flush();
    }
    grpc::Status st = reader->Finish();
    if (!st.ok()) return FailRpc("events", st);
    return 0;
  }
  return std::nullopt;
}

}  // namespace linesign::client
