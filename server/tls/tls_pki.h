// A small software PKI for transport security in development mode and tests: a station CA, the server's TLS
// certificate and station/admin client certificates, all P-256 keys held in files. Production deployments bring
// their own station CA (or use linesign's); nothing here is on the signing path.
#ifndef LINESIGN_SERVER_TLS_TLS_PKI_H_
#define LINESIGN_SERVER_TLS_TLS_PKI_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace linesign::tls {

// KeyAndCertificate is a P-256 private key and its certificate, both PEM.
struct KeyAndCertificate {
  std::string key_pem;
  std::string certificate_pem;
};

// MakeTlsCa creates a self-signed CA (CA:TRUE pathlen:`path_length`, keyCertSign + cRLSign) named `common_name`,
// valid from `not_before` to `not_after`. pathlen 0 issues leaves only; 1 also subordinate CAs (IssueCa).
absl::StatusOr<KeyAndCertificate> MakeTlsCa(const std::string& common_name, absl::Time not_before,
                                            absl::Time not_after, int path_length = 0);

// IssueCa issues a subordinate CA (CA:TRUE pathlen:0) named `common_name` under `parent`, which must allow it
// (pathlen >= 1).
absl::StatusOr<KeyAndCertificate> IssueCa(const KeyAndCertificate& parent, const std::string& common_name,
                                          absl::Time not_before, absl::Time not_after);

struct LeafSpec {
  std::string common_name;
  std::vector<std::string> dns_names;
  std::vector<std::string> ip_addresses;  // text form, "127.0.0.1", "::1"
  std::vector<std::string> uris;
  bool server = false;  // serverAuth, else clientAuth
  absl::Time not_before;
  absl::Time not_after;
  // A station or administrator credential: the extendedKeyUsage gets the linesign station EKU
  // (auth::kStationEkuOid) besides clientAuth, as tls.require_station_marker demands. Client certificates only.
  bool station_credential = false;
};

// IssueLeaf issues a certificate for a new P-256 key under `ca`. The serial is random (16 octets).
absl::StatusOr<KeyAndCertificate> IssueLeaf(const KeyAndCertificate& ca, const LeafSpec& spec);

// MakeCrl returns a PEM CRL signed by `ca` listing `revoked_serials_hex`, valid from `this_update` for a week.
absl::StatusOr<std::string> MakeCrl(const KeyAndCertificate& ca, const std::vector<std::string>& revoked_serials_hex,
                                    absl::Time this_update);

// SerialHex returns the upper-case hex serial of a PEM certificate.
absl::StatusOr<std::string> SerialHex(const std::string& certificate_pem);

// WriteCredentials writes DIR/ca.pem, DIR/cert.pem and DIR/key.pem (mode 0600): the layout `linesign --tls-dir`
// reads.
absl::Status WriteCredentials(const std::string& dir, const std::string& ca_pem, const KeyAndCertificate& leaf);

}  // namespace linesign::tls

#endif  // LINESIGN_SERVER_TLS_TLS_PKI_H_
