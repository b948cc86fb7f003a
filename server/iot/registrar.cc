#include "server/iot/registrar.h"

#include <openssl/x509.h>

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/openssl_util.h"
#include "nlohmann/json.hpp"
#include "server/iot/aws_error.h"
#include "server/iot/iot_config.h"
#include "server/iot/sigv4.h"

namespace linesign::iot {
namespace {

const absl::Status& StatusOf(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& StatusOf(const absl::StatusOr<T>& s) {
  return s.status();
}

// SubjectCn returns the certificate's first commonName as UTF-8 ("" when it has none or cannot be read).
std::string SubjectCn(const std::string& der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  OsslPtr<X509> cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (cert == nullptr) return "";
  const X509_NAME* name = X509_get_subject_name(cert.get());
  int at = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (at < 0) return "";
  unsigned char* utf8 = nullptr;
  int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, at)));
  if (n < 0) return "";
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(n));
  OPENSSL_free(utf8);
  return out;
}

// ErrorCode is what a failure is recorded as: AWS's error code, or linesign's reason for one AWS never saw.
std::string ErrorCode(const absl::Status& st) {
  std::string code = AwsErrorCode(st);
  if (!code.empty()) return code;
  if (ClassifyAwsError(st) == AwsErrorKind::kTransport) return "linesign:Transport";
  return absl::StrCat("linesign:", absl::StatusCodeToString(st.code()));
}

std::string EventData(const store::IotRegistration& r) {
  nlohmann::json j = {{"target", r.key.target}, {"certificate_id", r.certificate_id}};
  if (r.state == store::IotRegistrationState::kRegistered) {
    j["certificate_arn"] = r.certificate_arn;
    if (!r.thing_name.empty()) j["thing_name"] = r.thing_name;
    if (!r.policy.empty()) j["policy"] = r.policy;
    if (r.already_present) j["already_present"] = true;
  } else {
    j["error_code"] = r.error_code;
    j["error_message"] = r.error_message;
  }
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

// ---- GovernedIotApi ----

namespace {
thread_local std::function<absl::Status()>* before_call = nullptr;
}  // namespace

ScopedBeforeCall::ScopedBeforeCall(std::function<absl::Status()> check)
    : check_(std::move(check)), previous_(before_call) {
  before_call = &check_;
}

ScopedBeforeCall::~ScopedBeforeCall() { before_call = previous_; }

GovernedIotApi::GovernedIotApi(const IotApi* inner, const std::map<std::string, double>& rates, const Clock* clock,
                               Observer observer, const std::atomic<bool>* stopping)
    : inner_(inner), clock_(clock), observer_(std::move(observer)), stopping_(stopping) {
  for (const auto& [op, rate] : rates) {
    rates_.emplace(op, std::make_unique<AdaptiveRate>(AdaptiveRate::Options{.ceiling = rate,
                                                                            .floor = std::min(0.1, rate)},
                                                      clock->Now()));
  }
}

absl::Status GovernedIotApi::Acquire(const char* operation) const {
  auto it = rates_.find(operation);
  if (it == rates_.end()) return absl::OkStatus();
  while (true) {
    if (stopping_ != nullptr && stopping_->load()) return absl::UnavailableError("AWS IoT registrar stopping");
    const absl::Time now = clock_->Now();
    const absl::Time at = it->second->TryAcquire(now);
    if (at == absl::InfinitePast()) return absl::OkStatus();
    // Short naps: a stopping registrar does not wait for a slow bucket.
    absl::SleepFor(std::clamp(at - now, absl::Microseconds(100), absl::Milliseconds(50)));
  }
}

void GovernedIotApi::Report(const char* operation, const absl::Status& status) const {
  if (auto it = rates_.find(operation); it != rates_.end()) {
    if (ClassifyAwsError(status) == AwsErrorKind::kThrottled) {
      it->second->OnThrottled(clock_->Now());
    } else if (status.ok()) {
      it->second->OnSuccess(clock_->Now());
    }
  }
  if (observer_) observer_(operation, status);
}

template <typename F>
auto GovernedIotApi::Call(const char* operation, F&& call) const -> decltype(call()) {
  if (absl::Status st = Acquire(operation); !st.ok()) return st;
  if (before_call != nullptr) {
    if (absl::Status st = (*before_call)(); !st.ok()) return st;
  }
  auto result = call();
  Report(operation, StatusOf(result));
  return result;
}

absl::StatusOr<std::string> GovernedIotApi::GetRegistrationCode() const {
  return Call("GetRegistrationCode", [&] { return inner_->GetRegistrationCode(); });
}
absl::StatusOr<RegisteredCertificate> GovernedIotApi::RegisterCaCertificate(
    const RegisterCaCertificateRequest& r) const {
  return Call("RegisterCACertificate", [&] { return inner_->RegisterCaCertificate(r); });
}
absl::Status GovernedIotApi::UpdateCaCertificate(absl::string_view id, std::optional<std::string> new_status,
                                                 std::optional<std::string> new_auto) const {
  return Call("UpdateCACertificate", [&] { return inner_->UpdateCaCertificate(id, new_status, new_auto); });
}
absl::StatusOr<CaCertificateDescription> GovernedIotApi::DescribeCaCertificate(absl::string_view id) const {
  return Call("DescribeCACertificate", [&] { return inner_->DescribeCaCertificate(id); });
}
absl::StatusOr<RegisteredCertificate> GovernedIotApi::RegisterCertificate(absl::string_view pem,
                                                                          absl::string_view ca_pem,
                                                                          absl::string_view status) const {
  return Call("RegisterCertificate", [&] { return inner_->RegisterCertificate(pem, ca_pem, status); });
}
absl::StatusOr<RegisteredCertificate> GovernedIotApi::RegisterCertificateWithoutCa(absl::string_view pem,
                                                                                   absl::string_view status) const {
  return Call("RegisterCertificateWithoutCA", [&] { return inner_->RegisterCertificateWithoutCa(pem, status); });
}
absl::StatusOr<Thing> GovernedIotApi::CreateThing(absl::string_view name,
                                                  const std::map<std::string, std::string>& attributes) const {
  return Call("CreateThing", [&] { return inner_->CreateThing(name, attributes); });
}
absl::Status GovernedIotApi::AttachThingPrincipal(absl::string_view thing, absl::string_view principal) const {
  return Call("AttachThingPrincipal", [&] { return inner_->AttachThingPrincipal(thing, principal); });
}
absl::Status GovernedIotApi::AttachPolicy(absl::string_view policy, absl::string_view target) const {
  return Call("AttachPolicy", [&] { return inner_->AttachPolicy(policy, target); });
}
absl::StatusOr<CertificateDescription> GovernedIotApi::DescribeCertificate(absl::string_view id) const {
  return Call("DescribeCertificate", [&] { return inner_->DescribeCertificate(id); });
}

// ---- Registrar ----

Registrar::Registrar(Parts parts, Options options) : p_(std::move(parts)), options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<Registrar>> Registrar::Create(Parts parts, Options options) {
  if (parts.store == nullptr || parts.outbox == nullptr || parts.reader == nullptr || parts.profiles == nullptr ||
      parts.clock == nullptr) {
    return absl::InvalidArgumentError("iot registrar: store, outbox, reader, profiles and clock are required");
  }
  if (options.owner.empty()) return absl::InvalidArgumentError("iot registrar: an owner is required");
  if (options.max_in_flight < 1 || options.max_in_flight > 1024) {
    return absl::InvalidArgumentError(absl::StrCat("iot registrar: max_in_flight ", options.max_in_flight,
                                                   " is outside 1 to 1024"));
  }
  if (options.lease <= absl::ZeroDuration() || options.retry_base <= absl::ZeroDuration() ||
      options.retry_max < options.retry_base) {
    return absl::InvalidArgumentError("iot registrar: lease and retry_base must be positive, retry_max >= retry_base");
  }
  std::unique_ptr<Registrar> r(new Registrar(std::move(parts), std::move(options)));
  r->AddMetrics();
  for (Target& t : r->p_.targets) {
    TargetState s{.name = t.name};
    if (!t.api.ok()) {
      s.unusable = t.api.status();
    } else {
      const std::string target = t.name;
      Registrar* self = r.get();
      s.api = std::make_unique<GovernedIotApi>(
          *t.api, t.rates, r->p_.clock,
          [self, target](std::string_view operation, const absl::Status& st) {
            if (self->calls_ == nullptr) return;
            const std::string outcome = st.ok() ? "ok" : ErrorCode(st);
            self->calls_->Get({target, operation, outcome})->Add();
            if (ClassifyAwsError(st) == AwsErrorKind::kThrottled) self->throttles_->Get({target, operation})->Add();
          },
          &r->stopping_);
    }
    r->targets_.emplace(t.name, std::move(s));
  }
  r->workers_.reserve(r->options_.max_in_flight);
  for (int i = 0; i < r->options_.max_in_flight; ++i) r->workers_.emplace_back([self = r.get()] { self->Worker(); });
  return r;
}

void Registrar::AddMetrics() {
  metrics::Registry* m = p_.metrics;
  if (m == nullptr) return;
  calls_ = m->AddCounter("linesign_iot_calls_total",
                         "AWS IoT calls by target, operation and outcome (ok, or the AWS error code).",
                         {"target", "operation", "outcome"});
  throttles_ = m->AddCounter("linesign_iot_throttles_total",
                             "AWS IoT calls answered ThrottlingException, by target and operation.",
                             {"target", "operation"});
  outcomes_ = m->AddCounter("linesign_iot_registrations_total",
                            "Device certificate registrations this server ended, by target and outcome "
                            "(registered, failed).",
                            {"target", "outcome"});
  retries_ = m->AddCounter("linesign_iot_registration_retries_total",
                           "Registrations rescheduled after a retryable failure, by target.", {"target"});
  m->AddCallback("linesign_iot_rate_per_second",
                 "The registrar's current request rate per target and operation (cut on throttling, grown back "
                 "to the configured ceiling).",
                 metrics::Type::kGauge, {"target", "operation"}, [this](const metrics::Emit& emit) {
                   for (const auto& [name, t] : targets_) {
                     if (t.api == nullptr) continue;
                     for (const auto& [op, rate] : t.api->rates()) emit({name, op}, rate->rate());
                   }
                 });
  m->AddCallback("linesign_iot_registrations_in_flight", "Registrations the registrar is working on now.",
                 metrics::Type::kGauge, {}, [this](const metrics::Emit& emit) {
                   std::lock_guard<std::mutex> lock(mu_);
                   emit({}, static_cast<double>(busy_ + queue_.size()));
                 });
}

Registrar::~Registrar() { OnStop(); }

void Registrar::OnStop() {
  std::deque<store::OutboxItem> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return;
    stopped_ = true;
    stopping_ = true;
    left.swap(queue_);
    cv_.notify_all();
  }
  for (std::thread& t : workers_) t.join();
  workers_.clear();
  // Claimed but not started: due again now, for another replica or the next start, without waiting for the lease.
  for (const store::OutboxItem& item : left) {
    p_.outbox->Reschedule(item.id, options_.owner, p_.clock->Now(), "released: registrar stopped").IgnoreError();
  }
}

absl::Status Registrar::RunOnce(absl::Time now) {
  while (true) {
    int idle;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopped_) return absl::OkStatus();
      idle = options_.max_in_flight - busy_ - static_cast<int>(queue_.size());
    }
    if (idle <= 0) return absl::OkStatus();
    absl::StatusOr<std::vector<store::OutboxItem>> items = p_.outbox->Claim(store::ClaimRequest{
        .kind = store::kIotRegisterOutboxKind, .now = now, .lease = options_.lease, .limit = idle,
        .owner = options_.owner});
    if (!items.ok()) return items.status();
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (store::OutboxItem& item : *items) {
        if (active_.insert(item.id).second) queue_.push_back(std::move(item));
      }
      cv_.notify_all();
    }
    if (static_cast<int>(items->size()) < idle) return absl::OkStatus();
    now = p_.clock->Now();
  }
}

void Registrar::Worker() {
  while (true) {
    store::OutboxItem item;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopped_ || !queue_.empty(); });
      if (stopped_) return;
      item = std::move(queue_.front());
      queue_.pop_front();
      ++busy_;
    }
    Process(item);
    std::lock_guard<std::mutex> lock(mu_);
    --busy_;
    active_.erase(item.id);
  }
}

absl::Time Registrar::Backoff(int failures, absl::Time now) {
  absl::Duration cap = options_.retry_base;
  for (int i = 1; i < failures && cap < options_.retry_max; ++i) cap *= 2;
  cap = std::min(cap, options_.retry_max);
  // Full jitter: uniform in [0, cap], so retries of many items spread out instead of arriving together.
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  return now + cap * uniform(rng);
}

void Registrar::Process(const store::OutboxItem& item) {
  const std::string& owner = options_.owner;
  absl::StatusOr<store::IotRegistrationKey> key = store::ParseIotRegisterPayload(item.payload);
  if (!key.ok()) {
    LogWarning("iot registrar: outbox item ", item.id, " dropped: ", key.status().message());
    p_.outbox->Complete(item.id, owner, p_.clock->Now()).IgnoreError();
    return;
  }
  absl::StatusOr<std::optional<store::IotRegistration>> stored = p_.store->GetIotRegistration(*key);
  if (!stored.ok()) {
    // The store is failing: leave the item to its lease (it is claimed again once that expires).
    LogWarning("iot registrar: ", key->serial_hex, " → ", key->target, ": ", stored.status().message());
    return;
  }
  if (!stored->has_value() || (*stored)->state != store::IotRegistrationState::kPending) {
    // Nothing to do: already ended (an item enqueued twice), or no registration row (cannot happen: the row is
    // written with the item).
    p_.outbox->Complete(item.id, owner, p_.clock->Now()).IgnoreError();
    return;
  }
  store::IotRegistration r = **stored;
  absl::Time last_write = p_.clock->Now();
  std::optional<store::CertificateRecord> cert;

  auto notify = [&] {
    if (p_.watch != nullptr) p_.watch->Notify(r.key);
  };
  auto event = [&](const char* type) {
    return store::Event{.type = type,
                        .issuer_id = r.key.issuer_id,
                        .serial_hex = r.key.serial_hex,
                        .station = cert.has_value() ? cert->station : "",
                        .profile = cert.has_value() ? cert->profile : "",
                        .time = p_.clock->Now(),
                        .data = EventData(r)};
  };
  auto write = [&] {
    return store::IotRegistrationWrite{.outbox_id = item.id, .owner = owner, .now = p_.clock->Now(), .registration = r};
  };
  // fail ends the registration as failed (permanent): state, event and completion in one transaction.
  auto fail = [&](const std::string& code, absl::string_view message) {
    r.state = store::IotRegistrationState::kFailed;
    r.error_code = code;
    r.error_message = std::string(message);
    absl::Status st = p_.store->FinishIotRegistration(write(), event(store::kEventIotFailed));
    if (!st.ok()) {
      LogWarning("iot registrar: ", r.key.serial_hex, " → ", r.key.target, ": recording the failure: ", st.message());
      return;
    }
    ++failed_;
    if (outcomes_ != nullptr) outcomes_->Get({r.key.target, "failed"})->Add();
    LogWarning("iot registrar: ", r.key.serial_hex, " → ", r.key.target, " failed: ", code, ": ", message);
    notify();
  };

  if (r.key.issuer_id != p_.issuer_id) {
    return fail("linesign:OtherIssuer",
                absl::StrCat("the certificate was issued by another CA (issuer ", r.key.issuer_id,
                             ") than this server's; register it from a server of that CA"));
  }
  absl::StatusOr<std::optional<store::CertificateRecord>> found = p_.reader->FindBySerial(r.key.issuer_id,
                                                                                         r.key.serial_hex);
  if (!found.ok()) {
    LogWarning("iot registrar: ", r.key.serial_hex, ": ", found.status().message());
    return;  // the store is failing: the lease brings the item back
  }
  if (!found->has_value()) {
    return fail("linesign:UnknownCertificate", absl::StrCat("no certificate with serial ", r.key.serial_hex));
  }
  cert = **found;
  auto target = targets_.find(r.key.target);
  if (target == targets_.end()) {
    std::vector<std::string> names;
    for (const auto& [n, _] : targets_) names.push_back(n);
    return fail("linesign:UnknownTarget",
                absl::StrCat("iot target '", r.key.target, "' is not configured (iot.targets: ",
                             names.empty() ? "none" : absl::StrJoin(names, ", "), ")"));
  }
  if (target->second.api == nullptr) {
    return fail("linesign:TargetUnavailable", target->second.unusable.message());
  }
  const IotApi& api = *target->second.api;

  RegistrationProgress progress;
  if (!r.progress.empty()) {
    absl::StatusOr<RegistrationProgress> parsed = RegistrationProgress::FromJson(r.progress);
    if (!parsed.ok()) return fail("linesign:BadProgress", parsed.status().message());
    progress = *std::move(parsed);
  }
  DeviceRegistration dr{.certificate_der = cert->der};
  if (progress.next == RegistrationStep::kRegister) {
    // The profile decides the mode, and on the first attempt the thing and policy (kept in the row from then on,
    // so a changed profile never sends a half-done registration to another thing).
    absl::StatusOr<std::shared_ptr<const profile::Profile>> profile = p_.profiles->Find(cert->profile);
    const std::string mode = profile.ok() ? (*profile)->config().iot().register_() : "";
    if (mode != "with_ca" && mode != "without_ca") {
      return fail("linesign:NotRegistering",
                  absl::StrCat("profile '", cert->profile, "' no longer registers its certificates with AWS IoT"));
    }
    if (mode == "with_ca") dr.ca_certificate_pem = p_.ca_certificate_pem;
    if (r.progress.empty()) {
      const v1::ProfileIotConfig& iot = (*profile)->config().iot();
      r.policy = iot.policy();
      r.thing_name.clear();
      if (!iot.thing_name().empty()) {
        absl::StatusOr<std::string> thing = ExpandThingName(
            iot.thing_name(), ThingNameFields{.subject_cn = SubjectCn(cert->der), .serial = cert->serial_hex,
                                              .station = cert->station});
        if (!thing.ok()) return fail("linesign:InvalidThingName", thing.status().message());
        r.thing_name = *std::move(thing);
      }
      r.certificate_id = HexSha256(cert->der);
    }
  }
  dr.thing_name = r.thing_name;
  dr.policy = r.policy;

  // After a long wait for a slow bucket, renew the lease (and make sure it is still ours) between the token and
  // the call to AWS: a call is never made on a lease that expired while waiting.
  bool lost_lease = false;
  ScopedBeforeCall keep_lease([&]() -> absl::Status {
    if (p_.clock->Now() - last_write <= options_.lease / 3) return absl::OkStatus();
    absl::Status st = p_.store->SaveIotProgress(write(), options_.lease);
    if (!st.ok()) {
      lost_lease = true;
      return st;
    }
    last_write = p_.clock->Now();
    return absl::OkStatus();
  });
  while (progress.next != RegistrationStep::kDone) {
    absl::Status st = RunNextStep(api, dr, &progress);
    if (!st.ok()) {
      if (lost_lease) {
        // Another runner has the item (or the store failed): it, or the lease's expiry, takes it from the last
        // saved step; nothing was sent to AWS on the lost lease.
        LogWarning("iot registrar: ", r.key.serial_hex, " → ", r.key.target, ": ", st.message());
        return;
      }
      if (stopping_) {
        // Stopping (a bucket wait cut short, or a call that failed meanwhile): release it for the next start.
        p_.outbox->Reschedule(item.id, owner, p_.clock->Now(), "released: registrar stopped").IgnoreError();
        return;
      }
      const AwsErrorKind kind = ClassifyAwsError(st);
      if (!IsRetryable(kind)) return fail(ErrorCode(st), st.message());
      r.progress = progress.ToJson();
      r.error_code = ErrorCode(st);
      r.error_message = std::string(st.message());
      const absl::Time at = Backoff(r.attempts + 1, p_.clock->Now());
      absl::Status saved = p_.store->RetryIotRegistration(write(), at);
      if (!saved.ok()) {
        LogWarning("iot registrar: ", r.key.serial_hex, " → ", r.key.target, ": ", saved.message());
      } else if (retries_ != nullptr) {
        retries_->Get({r.key.target})->Add();
      }
      return;
    }
    r.progress = progress.ToJson();
    r.certificate_arn = progress.certificate_arn;
    r.already_present = progress.already_registered;
    if (progress.next == RegistrationStep::kDone) break;
    // Persist every step before the next call: a crash from here on resumes after it.
    absl::Status saved = p_.store->SaveIotProgress(write(), options_.lease);
    if (!saved.ok()) {
      // Lost the lease (another runner has the item) or the store failed: that runner, or the lease's expiry,
      // takes it from the last saved step.
      LogWarning("iot registrar: ", r.key.serial_hex, " → ", r.key.target, ": ", saved.message());
      return;
    }
    last_write = p_.clock->Now();
  }
  r.state = store::IotRegistrationState::kRegistered;
  r.error_code.clear();
  r.error_message.clear();
  absl::Status st = p_.store->FinishIotRegistration(write(), event(store::kEventIotRegistered));
  if (!st.ok()) {
    LogWarning("iot registrar: ", r.key.serial_hex, " → ", r.key.target, ": recording the registration: ",
               st.message());
    return;
  }
  ++registered_;
  if (outcomes_ != nullptr) outcomes_->Get({r.key.target, "registered"})->Add();
  notify();
}

}  // namespace linesign::iot
