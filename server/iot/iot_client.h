// IotApi: the AWS IoT control-plane operations linesign uses; RestIotClient speaks them over HTTPS REST-JSON with
// SigV4, exactly as ../shared/testdata/aws-iot-model/service-2.json defines them (methods, URIs, member names).
#ifndef LINESIGN_SERVER_IOT_IOT_CLIENT_H_
#define LINESIGN_SERVER_IOT_IOT_CLIENT_H_

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/clock.h"
#include "server/iot/credentials.h"
#include "server/iot/endpoint.h"
#include "server/iot/http_transport.h"

namespace linesign::iot {

// CertificateMode of a CA: DEFAULT (one account per region, with a verification certificate) or SNI_ONLY.
enum class CertificateMode { kDefault, kSniOnly };
const char* CertificateModeName(CertificateMode mode);  // "DEFAULT", "SNI_ONLY"

// RegisteredCertificate is what a Register* operation answers.
struct RegisteredCertificate {
  std::string certificate_id;  // lower-case hex SHA-256 of the DER
  std::string certificate_arn;
};

struct RegisterCaCertificateRequest {
  std::string ca_certificate_pem;
  std::string verification_certificate_pem;  // DEFAULT mode only; empty in SNI_ONLY
  CertificateMode mode = CertificateMode::kDefault;
  bool set_as_active = true;
  bool allow_auto_registration = false;
};

struct CaCertificateDescription {
  std::string certificate_id, certificate_arn, status, certificate_pem, auto_registration_status,
      certificate_mode, owned_by;
};

struct CertificateDescription {
  std::string certificate_id, certificate_arn, ca_certificate_id, status, certificate_pem, certificate_mode;
};

struct Thing {
  std::string thing_name, thing_arn, thing_id;
};

// IotApi is the seam the registrar and the CA registration use. Implementations are thread-safe; every method
// is one request (no retries: the caller owns backoff and rate). Errors are statuses made by aws_error.h, so
// ClassifyAwsError() and AwsErrorCode() tell what AWS answered; InvalidArgument (kind kNone) before any request
// when an argument breaks the API model's constraints (a thing name outside [a-zA-Z0-9:_-]{1,128}, a
// certificate id that is not 64 hex digits, ...).
class IotApi {
 public:
  virtual ~IotApi() = default;
  // GET /registrationcode → registrationCode.
  virtual absl::StatusOr<std::string> GetRegistrationCode() const = 0;
  // POST /cacertificate?setAsActive=&allowAutoRegistration= {caCertificate, verificationCertificate,
  // certificateMode}.
  virtual absl::StatusOr<RegisteredCertificate> RegisterCaCertificate(const RegisterCaCertificateRequest& r) const = 0;
  // PUT /cacertificate/{caCertificateId}?newStatus=&newAutoRegistrationStatus= (each optional).
  virtual absl::Status UpdateCaCertificate(absl::string_view ca_certificate_id, std::optional<std::string> new_status,
                                           std::optional<std::string> new_auto_registration_status) const = 0;
  // GET /cacertificate/{caCertificateId} → certificateDescription.
  virtual absl::StatusOr<CaCertificateDescription> DescribeCaCertificate(absl::string_view id) const = 0;
  // POST /certificate/register {certificatePem, caCertificatePem, status}.
  virtual absl::StatusOr<RegisteredCertificate> RegisterCertificate(absl::string_view certificate_pem,
                                                                    absl::string_view ca_certificate_pem,
                                                                    absl::string_view status) const = 0;
  // POST /certificate/register-no-ca {certificatePem, status}.
  virtual absl::StatusOr<RegisteredCertificate> RegisterCertificateWithoutCa(absl::string_view certificate_pem,
                                                                             absl::string_view status) const = 0;
  // POST /things/{thingName} {attributePayload: {attributes}} (attributes omitted when empty).
  virtual absl::StatusOr<Thing> CreateThing(absl::string_view thing_name,
                                            const std::map<std::string, std::string>& attributes) const = 0;
  // PUT /things/{thingName}/principals with header x-amzn-principal.
  virtual absl::Status AttachThingPrincipal(absl::string_view thing_name, absl::string_view principal_arn) const = 0;
  // PUT /target-policies/{policyName} {target}.
  virtual absl::Status AttachPolicy(absl::string_view policy_name, absl::string_view target_arn) const = 0;
  // GET /certificates/{certificateId} → certificateDescription.
  virtual absl::StatusOr<CertificateDescription> DescribeCertificate(absl::string_view certificate_id) const = 0;
};

// IotTarget is one AWS account and region, resolved: where to send, how to sign.
struct IotTarget {
  std::string name;  // the configuration's target name, for messages
  std::string region;
  Endpoint endpoint;
  AwsCredentials credentials;
  std::string signing_name = "iot";
};

// ResolveIotTarget resolves a configured target's region, endpoint and credentials (credentials.h, endpoint.h);
// the message of a failure starts with "iot target '<name>': ".
absl::StatusOr<IotTarget> ResolveIotTarget(absl::string_view name, absl::string_view region,
                                           absl::string_view endpoint, absl::string_view profile,
                                           const Environment& env);

// RestIotClient is IotApi over an HttpTransport (borrowed or shared: several targets may share one pool).
class RestIotClient final : public IotApi {
 public:
  // Create: `clock` is borrowed and outlives the client. InvalidArgument when the transport or clock is null.
  static absl::StatusOr<std::unique_ptr<RestIotClient>> Create(IotTarget target,
                                                               std::shared_ptr<const HttpTransport> transport,
                                                               const Clock* clock);

  absl::StatusOr<std::string> GetRegistrationCode() const override;
  absl::StatusOr<RegisteredCertificate> RegisterCaCertificate(const RegisterCaCertificateRequest& r) const override;
  absl::Status UpdateCaCertificate(absl::string_view ca_certificate_id, std::optional<std::string> new_status,
                                   std::optional<std::string> new_auto_registration_status) const override;
  absl::StatusOr<CaCertificateDescription> DescribeCaCertificate(absl::string_view id) const override;
  absl::StatusOr<RegisteredCertificate> RegisterCertificate(absl::string_view certificate_pem,
                                                            absl::string_view ca_certificate_pem,
                                                            absl::string_view status) const override;
  absl::StatusOr<RegisteredCertificate> RegisterCertificateWithoutCa(absl::string_view certificate_pem,
                                                                     absl::string_view status) const override;
  absl::StatusOr<Thing> CreateThing(absl::string_view thing_name,
                                    const std::map<std::string, std::string>& attributes) const override;
  absl::Status AttachThingPrincipal(absl::string_view thing_name, absl::string_view principal_arn) const override;
  absl::Status AttachPolicy(absl::string_view policy_name, absl::string_view target_arn) const override;
  absl::StatusOr<CertificateDescription> DescribeCertificate(absl::string_view certificate_id) const override;

  const IotTarget& target() const { return target_; }

  struct Call;  // one operation's request (internal)

 private:
  RestIotClient(IotTarget target, std::shared_ptr<const HttpTransport> transport, const Clock* clock);
  // Execute signs and sends `call`; returns the JSON body of a 2xx answer ("{}" when empty) or the classified
  // error. Messages never hold the secret, the session token or the signature.
  absl::StatusOr<std::string> Execute(Call& call) const;

  const IotTarget target_;
  const std::shared_ptr<const HttpTransport> transport_;
  const Clock* const clock_;
};

}  // namespace linesign::iot

#endif  // LINESIGN_SERVER_IOT_IOT_CLIENT_H_
