#include "client/iot_commands.h"

#include <chrono>
#include <iostream>

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

}  // namespace linesign::client
