#include "client/iot_commands.h"

#include <algorithm>
#include <chrono>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/time/time.h"
#include "common/openssl_util.h"
#include "linesign/v1/iot.grpc.pb.h"

namespace linesign::client {

CLI::App* AddRegisterCaCommand(CLI::App* iot, RegisterCaOptions* o) {
  auto* cmd = iot->add_subcommand(
      "register-ca", "Register the issuing CA with an AWS IoT target (GetRegistrationCode, a verification certificate "
                     "signed by the CA key, RegisterCACertificate); reports an existing registration instead");
  cmd->add_option("--target", o->target, "Target name (iot.targets[].name in the server's configuration)")->required();
  cmd->add_option("--mode", o->mode, "default (one account per region, verification certificate) or sni-only")
      ->check(CLI::IsMember({"default", "sni-only"}))
      ->capture_default_str();
  cmd->add_flag("--auto-registration", o->auto_registration, "Allow just-in-time registration of device certificates");
  cmd->add_flag("--no-activate", o->no_activate, "Register the CA INACTIVE");
  cmd->add_option("--timeout", o->timeout_s, "Deadline in seconds")->capture_default_str();
  return cmd;
}

int RunRegisterCa(const RegisterCaOptions& o, const std::shared_ptr<grpc::Channel>& channel) {
  v1::RegisterCaCertificateRequest request;
  request.set_target(o.target);
  request.set_mode(o.mode == "sni-only" ? v1::RegisterCaCertificateRequest::MODE_SNI_ONLY
                                        : v1::RegisterCaCertificateRequest::MODE_DEFAULT);
  request.set_allow_auto_registration(o.auto_registration);
  request.set_no_activate(o.no_activate);
  v1::RegisterCaCertificateResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(o.timeout_s));
  grpc::Status st = v1::IotAdministration::NewStub(channel)->RegisterCaCertificate(&context, request, &response);
  if (!st.ok()) {
    std::cerr << "linesign: iot register-ca failed: " << StatusCodeName(st.error_code()) << ": " << st.error_message()
              << "\n";
    return 1;
  }
  std::cout << (response.already_registered() ? "already registered" : "registered") << "\n"
            << "certificate_id: " << response.certificate_id() << "\n"
            << "certificate_arn: " << response.certificate_arn() << "\n"
            << "status: " << response.status() << "\n"
            << "mode: " << response.mode() << "\n"
            << "auto_registration: " << response.auto_registration_status() << "\n";
  if (!response.verification_serial_hex().empty()) {
    std::cout << "verification_certificate_serial: " << response.verification_serial_hex() << "\n";
  }
  return 0;
}

void AddCaStatusCommands(CLI::App* iot, CaStatusCommands* c) {
  c->status = iot->add_subcommand("ca-status", "Print the issuing CA's registration with an AWS IoT target");
  c->activate = iot->add_subcommand("activate-ca", "Set the registered CA ACTIVE (UpdateCACertificate)");
  c->deactivate = iot->add_subcommand("deactivate-ca", "Set the registered CA INACTIVE (UpdateCACertificate)");
  for (CLI::App* cmd : {c->status, c->activate, c->deactivate}) {
    cmd->add_option("--target", c->target, "Target name (iot.targets[].name)")->required();
  }
}

int RunCaStatus(const CaStatusCommands& c, const std::shared_ptr<grpc::Channel>& channel) {
  v1::CaStatusRequest request;
  request.set_target(c.target);
  request.set_active(c.activate->parsed());
  v1::CaStatus response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto stub = v1::IotAdministration::NewStub(channel);
  const bool set = c.activate->parsed() || c.deactivate->parsed();
  grpc::Status st = set ? stub->SetCaStatus(&context, request, &response)
                        : stub->GetCaStatus(&context, request, &response);
  const char* name = c.activate->parsed() ? "activate-ca" : c.deactivate->parsed() ? "deactivate-ca" : "ca-status";
  if (!st.ok()) {
    std::cerr << "linesign: iot " << name << " failed: " << StatusCodeName(st.error_code()) << ": "
              << st.error_message() << "\n";
    return 1;
  }
  if (!response.registered()) {
    std::cout << "not registered\ncertificate_id: " << response.certificate_id() << "\n";
    return 0;
  }
  std::cout << "registered\n"
            << "certificate_id: " << response.certificate_id() << "\n"
            << "certificate_arn: " << response.certificate_arn() << "\n"
            << "status: " << response.status() << "\n"
            << "mode: " << response.mode() << "\n"
            << "auto_registration: " << response.auto_registration_status() << "\n";
  return 0;
}

CLI::App* AddWaitCommand(CLI::App* iot, WaitOptions* o) {
  auto* cmd = iot->add_subcommand(
      "wait", "Wait until a certificate's AWS IoT registration has ended (registered, or failed with the reason), "
              "without calling AWS");
  cmd->add_option("serial", o->serial, "The certificate's serial, hexadecimal")->required();
  cmd->add_option("--target", o->target, "Target name (iot.targets[].name); default: the server's only target");
  cmd->add_option("--timeout", o->timeout, "How long to wait: 500ms, 30s, 5m (at most 10m) or seconds")
      ->capture_default_str();
  return cmd;
}

int RunWait(const WaitOptions& o, const std::shared_ptr<grpc::Channel>& channel) {
  absl::Duration timeout;
  double seconds = 0;
  if (absl::SimpleAtod(o.timeout, &seconds)) {
    timeout = absl::Seconds(seconds);
  } else if (!absl::ParseDuration(o.timeout, &timeout)) {
    std::cerr << "linesign: iot wait: --timeout '" << o.timeout << "' is not a duration (500ms, 30s, 5m)\n";
    return 1;
  }
  if (timeout <= absl::ZeroDuration()) {
    std::cerr << "linesign: iot wait: --timeout must be positive\n";
    return 1;
  }
  timeout = std::min(timeout, absl::Minutes(10));
  v1::AwaitIotRegistrationRequest request;
  request.set_serial_hex(o.serial);
  request.set_target(o.target);
  request.set_timeout_ms(static_cast<uint32_t>(std::max<int64_t>(1, absl::ToInt64Milliseconds(timeout))));
  v1::IotRegistrationStatus response;
  grpc::ClientContext context;
  // The server answers DEADLINE_EXCEEDED itself at the timeout, with what it knows; this deadline is only a bound.
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout + absl::Seconds(30)));
  grpc::Status st = v1::IotAdministration::NewStub(channel)->AwaitIotRegistration(&context, request, &response);
  if (!st.ok()) {
    std::cerr << "linesign: iot wait failed: " << StatusCodeName(st.error_code()) << ": " << st.error_message()
              << "\n";
    return 1;
  }
  const bool registered = response.state() == v1::IotRegistrationStatus::STATE_REGISTERED;
  std::cout << (registered ? "registered" : "failed") << "\n"
            << "serial: " << response.serial_hex() << "\n"
            << "target: " << response.target() << "\n"
            << "certificate_id: " << response.certificate_id() << "\n";
  if (registered) {
    std::cout << "certificate_arn: " << response.certificate_arn() << "\n"
              << "thing: " << response.thing_name() << "\n"
              << "policy: " << response.policy() << "\n";
    if (response.already_present()) std::cout << "already_present: true\n";
    return 0;
  }
  std::cout << "error_code: " << response.error_code() << "\n"
            << "error_message: " << response.error_message() << "\n"
            << "attempts: " << response.attempts() << "\n";
  return 2;
}

}  // namespace linesign::client
