// TestCa: a real CA for tests, made by the real ceremony script (deploy/ceremony.sh) in a temporary directory:
// a SoftHSM2 token holding the intermediate key, an offline root, the chain.
#ifndef LINESIGN_TESTS_TESTING_TEST_CA_H_
#define LINESIGN_TESTS_TESTING_TEST_CA_H_

#include <string>

#include <grpcpp/grpcpp.h>

#include <memory>

#include "absl/status/statusor.h"
#include "linesign/v1/config.pb.h"
#include "server/tls/tls_pki.h"

namespace linesign::testing {

// TempDir creates a fresh directory under $TMPDIR (or /tmp) and returns its path.
std::string TempDir(const std::string& prefix);

struct TestCa {
  std::string dir;
  std::string algorithm;     // ec-p256, ec-p384, rsa-2048, ...
  std::string module;        // the SoftHSM2 module
  std::string key_uri;
  std::string softhsm2_conf;
  std::string pin_file;
  std::string root_pem;      // path
  std::string chain_pem;     // path
  // Transport: a station CA (software key) that issued the server's TLS certificate (dir/tls) and issues
  // station certificates on demand.
  tls::KeyAndCertificate station_ca;

  // Create runs the ceremony for `algorithm` into a new temporary directory.
  static absl::StatusOr<TestCa> Create(const std::string& algorithm = "ec-p256");

  // Config returns a complete, defaulted configuration using this CA, listening on 127.0.0.1:0 with mTLS, with
  // the store at `db_path` and one profile "device" (P-256, P-384, Ed25519 and RSA keys; DNS and IP SANs) plus a
  // profile "server" (serverAuth, 30 days) and a profile "serial" (CN must match ^[A-Z0-9]{12}$, DNS SANs
  // under .devices.example, CRL DP, a policy OID, keyAgreement). Access: "station-1" may use all three, identities matching
  // "line[0-9]+-st[0-9]+" only "device", "admin" administers.
  v1::ServerConfig Config(const std::string& db_path) const;

  // Channel opens a gRPC channel to a server started with Config(), as the station `identity`. Every test
  // reaches the server through this, so the transport's security is decided in one place.
  std::shared_ptr<grpc::Channel> Channel(const std::string& address,
                                         const std::string& identity = "station-1") const;

  // StationCredentials issues a client certificate for `identity` from the station CA (valid now for a day
  // unless `spec` says otherwise; spec.common_name is set to `identity`). It carries the linesign station EKU
  // (spec.station_credential is set), as tls.require_station_marker demands.
  tls::KeyAndCertificate StationCredentials(const std::string& identity, tls::LeafSpec spec = {}) const;
  // ChannelWith opens a channel trusting the station CA (which issued the server certificate) and presenting
  // `client` (none when its certificate is empty).
  std::shared_ptr<grpc::Channel> ChannelWith(const std::string& address, const tls::KeyAndCertificate& client) const;
};

// SourceDir returns the repository's root.
std::string SourceDir();
// ServerBinary returns the path of the built linesign-server.
std::string ServerBinary();
// ClientBinary returns the path of the built linesign command.
std::string ClientBinary();

}  // namespace linesign::testing

#endif  // LINESIGN_TESTS_TESTING_TEST_CA_H_
