#include "server/iot/iot_client.h"

#include <openssl/crypto.h>

#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/iot/aws_error.h"
#include "server/iot/sigv4.h"

namespace linesign::iot {

using json = nlohmann::json;

struct RestIotClient::Call {
  const char* operation;
  std::string method;
  std::string path;  // labels already encoded
  std::vector<std::pair<std::string, std::string>> query;
  std::vector<std::pair<std::string, std::string>> headers;
  std::optional<json> body;
};

namespace {

// Label checks follow the API model's shapes, so a bad argument is refused here rather than by AWS.
absl::Status CheckLabel(absl::string_view what, absl::string_view value, size_t min, size_t max,
                        absl::string_view allowed_punctuation, absl::string_view rule) {
  bool ok = value.size() >= min && value.size() <= max;
  for (char c : value) {
    if (!ok) break;
    ok = absl::ascii_isalnum(c) || allowed_punctuation.find(c) != absl::string_view::npos;
  }
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("AWS IoT: ", what, " '", absl::CHexEscape(value.substr(0, 200)),
                                                 "' does not match ", rule));
}

absl::Status CheckCertificateId(absl::string_view id) {
  bool ok = id.size() == 64;
  for (char c : id) ok = ok && absl::ascii_isxdigit(c);
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("AWS IoT: certificate id '", absl::CHexEscape(id.substr(0, 200)),
                                                 "' is not 64 hexadecimal digits"));
}

absl::Status CheckThingName(absl::string_view name) {
  return CheckLabel("thing name", name, 1, 128, ":_-", "[a-zA-Z0-9:_-]{1,128}");
}

std::string MemberString(const json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// BadAnswer: a 2xx answer that is not what the model says (not JSON, a member missing); the service is at fault.
absl::Status BadAnswer(absl::string_view operation, absl::string_view what) {
  return AwsErrorStatus(operation, "InternalFailureException", 500,
                        absl::StrCat("linesign: the 2xx answer ", what));
}

absl::StatusOr<json> ParseObject(absl::string_view operation, absl::string_view body) {
  json parsed = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_object()) return BadAnswer(operation, "is not a JSON object");
  return parsed;
}

absl::StatusOr<RegisteredCertificate> ToRegistered(absl::string_view operation, absl::string_view body) {
  LINESIGN_ASSIGN_OR_RETURN(json answer, ParseObject(operation, body));
  RegisteredCertificate r{.certificate_id = MemberString(answer, "certificateId"),
                          .certificate_arn = MemberString(answer, "certificateArn")};
  if (r.certificate_id.empty() || r.certificate_arn.empty()) {
    return BadAnswer(operation, "lacks certificateId or certificateArn");
  }
  return r;
}

const char* Bool(bool b) { return b ? "true" : "false"; }

}  // namespace

const char* CertificateModeName(CertificateMode mode) {
  return mode == CertificateMode::kSniOnly ? "SNI_ONLY" : "DEFAULT";
}

absl::StatusOr<IotTarget> ResolveIotTarget(absl::string_view name, absl::string_view region,
                                           absl::string_view endpoint, absl::string_view profile,
                                           const Environment& env) {
  auto prefixed = [&](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat("iot target '", name, "': ", s.message()));
  };
  IotTarget target;
  target.name = std::string(name);
  absl::StatusOr<std::string> resolved_region = ResolveRegion(region, env);
  if (!resolved_region.ok()) return prefixed(resolved_region.status());
  target.region = *std::move(resolved_region);
  absl::StatusOr<Endpoint> resolved_endpoint = ResolveEndpoint(endpoint, target.region, env);
  if (!resolved_endpoint.ok()) return prefixed(resolved_endpoint.status());
  target.endpoint = *std::move(resolved_endpoint);
  absl::StatusOr<AwsCredentials> credentials = ResolveCredentials(profile, env);
  if (!credentials.ok()) return prefixed(credentials.status());
  target.credentials = *std::move(credentials);
  return target;
}

absl::StatusOr<std::unique_ptr<RestIotClient>> RestIotClient::Create(IotTarget target,
                                                                     std::shared_ptr<const HttpTransport> transport,
                                                                     const Clock* clock) {
  if (transport == nullptr || clock == nullptr) {
    return absl::InvalidArgumentError("RestIotClient: a transport and a clock are required");
  }
  return std::unique_ptr<RestIotClient>(new RestIotClient(std::move(target), std::move(transport), clock));
}

RestIotClient::RestIotClient(IotTarget target, std::shared_ptr<const HttpTransport> transport, const Clock* clock)
    : target_(std::move(target)), transport_(std::move(transport)), clock_(clock) {}

absl::StatusOr<std::string> RestIotClient::Execute(Call& call) const {
  SigV4Request request{.method = call.method, .path = call.path, .query = call.query};
  request.headers.emplace_back("Host", target_.endpoint.host_header);
  if (call.body.has_value()) {
    request.headers.emplace_back("Content-Type", "application/json");
    request.body = call.body->dump();
  }
  for (auto& header : call.headers) request.headers.push_back(std::move(header));
  absl::StatusOr<SigV4Result> signature =
      SignV4(request, target_.credentials,
             {.region = target_.region, .service = target_.signing_name, .time = clock_->Now()});
  if (!signature.ok()) {
    return absl::Status(signature.status().code(), absl::StrCat("AWS IoT ", call.operation, ": ",
                                                                signature.status().message()));
  }

  // The path is sent as built: its labels are percent-encoded once (the signature encodes them once more).
  HttpRequest http{.method = call.method, .url = target_.endpoint.base_url + call.path,
                   .headers = std::move(request.headers), .body = std::move(request.body)};
  for (size_t i = 0; i < call.query.size(); ++i) {
    absl::StrAppend(&http.url, i == 0 ? "?" : "&", UriEncode(call.query[i].first, false), "=",
                    UriEncode(call.query[i].second, false));
  }
  absl::StatusOr<HttpResponse> response = transport_->Send(http);
  for (auto& [name, value] : http.headers) {
    if (absl::EqualsIgnoreCase(name, "X-Amz-Security-Token")) OPENSSL_cleanse(value.data(), value.size());
  }
  if (!response.ok()) return TransportErrorStatus(call.operation, response.status());
  if (response->status >= 200 && response->status < 300) {
    return response->body.empty() ? std::string("{}") : std::move(response->body);
  }

  const std::string code = ErrorCodeFromAnswer(response->headers, response->body);
  std::string message;
  json body = json::parse(response->body, nullptr, /*allow_exceptions=*/false);
  if (body.is_object()) {
    message = MemberString(body, "message");
    if (message.empty()) message = MemberString(body, "Message");
  }
  // An answer may echo what it was sent (InvalidSignatureException quotes the canonical request, token included):
  // whatever it echoes of our secrets is cut out before the message goes anywhere.
  for (absl::string_view secret : {target_.credentials.session_token.value(),
                                   target_.credentials.secret_access_key.value()}) {
    if (!secret.empty()) absl::StrReplaceAll({{secret, "<redacted>"}}, &message);
  }
  return AwsErrorStatus(call.operation, code, response->status, message);
}

absl::StatusOr<std::string> RestIotClient::GetRegistrationCode() const {
  Call call{.operation = "GetRegistrationCode", .method = "GET", .path = "/registrationcode"};
  LINESIGN_ASSIGN_OR_RETURN(std::string body, Execute(call));
  LINESIGN_ASSIGN_OR_RETURN(json answer, ParseObject(call.operation, body));
  std::string code = MemberString(answer, "registrationCode");
  if (code.empty()) return BadAnswer(call.operation, "lacks registrationCode");
  return code;
}

absl::StatusOr<RegisteredCertificate> RestIotClient::RegisterCaCertificate(
    const RegisterCaCertificateRequest& r) const {
  if (r.ca_certificate_pem.empty()) {
    return absl::InvalidArgumentError("AWS IoT RegisterCACertificate: the CA certificate PEM is empty");
  }
  if (r.mode == CertificateMode::kDefault && r.verification_certificate_pem.empty()) {
    return absl::InvalidArgumentError(
        "AWS IoT RegisterCACertificate: DEFAULT mode needs a verification certificate");
  }
  json body = {{"caCertificate", r.ca_certificate_pem}, {"certificateMode", CertificateModeName(r.mode)}};
  if (!r.verification_certificate_pem.empty()) body["verificationCertificate"] = r.verification_certificate_pem;
  Call call{.operation = "RegisterCACertificate", .method = "POST", .path = "/cacertificate",
            .query = {{"setAsActive", Bool(r.set_as_active)}, {"allowAutoRegistration", Bool(r.allow_auto_registration)}},
            .body = std::move(body)};
  LINESIGN_ASSIGN_OR_RETURN(std::string answer, Execute(call));
  return ToRegistered(call.operation, answer);
}

absl::Status RestIotClient::UpdateCaCertificate(absl::string_view id, std::optional<std::string> new_status,
                                                std::optional<std::string> new_auto_registration_status) const {
  LINESIGN_RETURN_IF_ERROR(CheckCertificateId(id));
  Call call{.operation = "UpdateCACertificate", .method = "PUT", .path = absl::StrCat("/cacertificate/", id),
            .body = json::object()};
  if (new_status.has_value()) call.query.emplace_back("newStatus", *new_status);
  if (new_auto_registration_status.has_value()) {
    call.query.emplace_back("newAutoRegistrationStatus", *new_auto_registration_status);
  }
  return Execute(call).status();
}

absl::StatusOr<CaCertificateDescription> RestIotClient::DescribeCaCertificate(absl::string_view id) const {
  LINESIGN_RETURN_IF_ERROR(CheckCertificateId(id));
  Call call{.operation = "DescribeCACertificate", .method = "GET", .path = absl::StrCat("/cacertificate/", id)};
  LINESIGN_ASSIGN_OR_RETURN(std::string body, Execute(call));
  LINESIGN_ASSIGN_OR_RETURN(json answer, ParseObject(call.operation, body));
  auto it = answer.find("certificateDescription");
  if (it == answer.end() || !it->is_object()) return BadAnswer(call.operation, "lacks certificateDescription");
  return CaCertificateDescription{.certificate_id = MemberString(*it, "certificateId"),
                                  .certificate_arn = MemberString(*it, "certificateArn"),
                                  .status = MemberString(*it, "status"),
                                  .certificate_pem = MemberString(*it, "certificatePem"),
                                  .auto_registration_status = MemberString(*it, "autoRegistrationStatus"),
                                  .certificate_mode = MemberString(*it, "certificateMode"),
                                  .owned_by = MemberString(*it, "ownedBy")};
}

absl::StatusOr<RegisteredCertificate> RestIotClient::RegisterCertificate(absl::string_view certificate_pem,
                                                                         absl::string_view ca_certificate_pem,
                                                                         absl::string_view status) const {
  json body = {{"certificatePem", certificate_pem}};
  if (!ca_certificate_pem.empty()) body["caCertificatePem"] = ca_certificate_pem;
  if (!status.empty()) body["status"] = status;
  Call call{.operation = "RegisterCertificate", .method = "POST", .path = "/certificate/register",
            .body = std::move(body)};
  LINESIGN_ASSIGN_OR_RETURN(std::string answer, Execute(call));
  return ToRegistered(call.operation, answer);
}

absl::StatusOr<RegisteredCertificate> RestIotClient::RegisterCertificateWithoutCa(absl::string_view certificate_pem,
                                                                                  absl::string_view status) const {
  json body = {{"certificatePem", certificate_pem}};
  if (!status.empty()) body["status"] = status;
  Call call{.operation = "RegisterCertificateWithoutCA", .method = "POST", .path = "/certificate/register-no-ca",
            .body = std::move(body)};
  LINESIGN_ASSIGN_OR_RETURN(std::string answer, Execute(call));
  return ToRegistered(call.operation, answer);
}

absl::StatusOr<Thing> RestIotClient::CreateThing(absl::string_view thing_name,
                                                 const std::map<std::string, std::string>& attributes) const {
  LINESIGN_RETURN_IF_ERROR(CheckThingName(thing_name));
  json body = json::object();
  if (!attributes.empty()) body["attributePayload"] = {{"attributes", attributes}};
  Call call{.operation = "CreateThing", .method = "POST", .path = absl::StrCat("/things/", UriEncode(thing_name, false)),
            .body = std::move(body)};
  LINESIGN_ASSIGN_OR_RETURN(std::string answer_body, Execute(call));
  LINESIGN_ASSIGN_OR_RETURN(json answer, ParseObject(call.operation, answer_body));
  Thing thing{.thing_name = MemberString(answer, "thingName"), .thing_arn = MemberString(answer, "thingArn"),
              .thing_id = MemberString(answer, "thingId")};
  if (thing.thing_arn.empty()) return BadAnswer(call.operation, "lacks thingArn");
  return thing;
}

absl::Status RestIotClient::AttachThingPrincipal(absl::string_view thing_name, absl::string_view principal_arn) const {
  LINESIGN_RETURN_IF_ERROR(CheckThingName(thing_name));
  if (principal_arn.empty()) return absl::InvalidArgumentError("AWS IoT AttachThingPrincipal: the principal is empty");
  Call call{.operation = "AttachThingPrincipal", .method = "PUT",
            .path = absl::StrCat("/things/", UriEncode(thing_name, false), "/principals"),
            .headers = {{"x-amzn-principal", std::string(principal_arn)}}};
  return Execute(call).status();
}

absl::Status RestIotClient::AttachPolicy(absl::string_view policy_name, absl::string_view target_arn) const {
  LINESIGN_RETURN_IF_ERROR(CheckLabel("policy name", policy_name, 1, 128, "_+=,.@-", "[\\w+=,.@-]{1,128}"));
  if (target_arn.empty()) return absl::InvalidArgumentError("AWS IoT AttachPolicy: the target is empty");
  Call call{.operation = "AttachPolicy", .method = "PUT",
            .path = absl::StrCat("/target-policies/", UriEncode(policy_name, false)),
            .body = json{{"target", target_arn}}};
  return Execute(call).status();
}

absl::StatusOr<CertificateDescription> RestIotClient::DescribeCertificate(absl::string_view certificate_id) const {
  LINESIGN_RETURN_IF_ERROR(CheckCertificateId(certificate_id));
  Call call{.operation = "DescribeCertificate", .method = "GET",
            .path = absl::StrCat("/certificates/", certificate_id)};
  LINESIGN_ASSIGN_OR_RETURN(std::string body, Execute(call));
  LINESIGN_ASSIGN_OR_RETURN(json answer, ParseObject(call.operation, body));
  auto it = answer.find("certificateDescription");
  if (it == answer.end() || !it->is_object()) return BadAnswer(call.operation, "lacks certificateDescription");
  return CertificateDescription{.certificate_id = MemberString(*it, "certificateId"),
                                .certificate_arn = MemberString(*it, "certificateArn"),
                                .ca_certificate_id = MemberString(*it, "caCertificateId"),
                                .status = MemberString(*it, "status"),
                                .certificate_pem = MemberString(*it, "certificatePem"),
                                .certificate_mode = MemberString(*it, "certificateMode")};
}

}  // namespace linesign::iot
