// IssuanceRequest: everything the batch signer needs to issue one certificate, independent of any CSR. The CSR
// front makes one from a checked CSR (csr::MakeIssuanceRequest); renewal, re-key and the AWS IoT CA
// verification certificate make theirs from stored facts. The certificate builder, the batch signer and the
// record take only this.
#ifndef LINESIGN_SERVER_ISSUANCE_ISSUANCE_REQUEST_H_
#define LINESIGN_SERVER_ISSUANCE_ISSUANCE_REQUEST_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "server/csr/strict_rules.h"
#include "server/profile/profile.h"
#include "server/store/event_log.h"
#include "server/store/outbox.h"

namespace linesign::issuance {

// kServerIdentity is the requester identity of requests the server makes itself (renewal, CA verification
// certificates); the store's (station, request_id) uniqueness keys them by it. No station identity can have it:
// auth::Authenticator refuses every client certificate whose identity starts with "linesign:"
// (auth::kReservedIdentityPrefix).
inline constexpr char kServerIdentity[] = "linesign:server";

struct IssuanceRequest {
  // Why the certificate is issued.
  enum class Reason {
    kNew,             // a first certificate (a station's CSR)
    kRenewal,         // same subject and key as predecessor_serial, new serial and validity
    kRekey,           // same subject as predecessor_serial, a new key
    kCaVerification,  // the AWS IoT CA verification certificate (CN = registration code)
  };
  // Who asked.
  struct Requester {
    enum class Kind { kStation, kAdministrator, kServer };
    Kind kind = Kind::kStation;
    std::string identity;    // the authenticated station or administrator, or kServerIdentity
    std::string request_id;  // unique per identity; a renewal's is "renew:<predecessor serial>"
  };

  Reason reason = Reason::kNew;
  std::string predecessor_serial;  // upper-case hex, same issuer; set for kRenewal and kRekey

  // What to certify. The builder checks all of it again against csr/strict_rules.h before signing.
  std::string subject_der;   // Name, DER
  std::string subject_text;  // RFC 2253, for the record and logs
  std::string spki_der;      // SubjectPublicKeyInfo, DER
  std::vector<csr::San> sans;  // in order; the certificate's subjectAltName
  std::shared_ptr<const profile::Profile> profile;  // required
  // Validity instead of the profile's; never longer than it (the shorter one wins).
  std::optional<absl::Duration> validity;

  Requester requester;
  std::string csr_sha256;  // hex SHA-256 of the CSR DER when the request came from one; empty otherwise

  // Recorded in the certificate's transaction, only if the certificate is. An event's empty issuer_id,
  // serial_hex, station, profile and zero time are filled with the certificate's.
  std::vector<store::Event> events;
  std::vector<store::OutboxItem> outbox;
};

}  // namespace linesign::issuance

#endif  // LINESIGN_SERVER_ISSUANCE_ISSUANCE_REQUEST_H_
