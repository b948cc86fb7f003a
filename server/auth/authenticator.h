// Authenticator: who is calling. Turns the client certificate a TLS handshake proved possession of into a
// verified station identity, or a precise UNAUTHENTICATED reason (no certificate, unknown CA, expired, revoked,
// not for client authentication, no identity field).
//
// The TLS layer only proves that the peer holds the key of the certificate it sent; the chain is verified here
// (against tls.client_ca_file and tls.crl_files), so a refusal reaches the station as a gRPC status with its
// reason, is counted and audited, instead of an anonymous handshake failure. Results are cached per certificate
// (a success for at most kSuccessCacheTime, a refusal for less), so the cost per call is one hash lookup.
// Reload re-reads the CA bundle and the CRLs (SIGHUP): a station revoked in a new CRL is refused from its next
// call on.
//
// Who is a station: only a certificate linesign can never issue through SignCsr. A client CA bundle that trusts
// linesign's issuing CA (or any CA above it) is refused, at Create and at every Reload, unless
// tls.require_station_marker is set; with it, every client certificate must carry kStationEkuOid
// (station_credential.h), which no profile can issue. Independently of the configuration, a certificate issued by
// linesign's issuing CA (a device certificate) never authenticates.
#ifndef LINESIGN_SERVER_AUTH_AUTHENTICATOR_H_
#define LINESIGN_SERVER_AUTH_AUTHENTICATOR_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/openssl_util.h"
#include "linesign/v1/config.pb.h"

namespace linesign::auth {

// kReservedIdentityPrefix starts the requester identities of requests the server makes itself
// (issuance::kServerIdentity); a client certificate naming an identity with it is refused.
inline constexpr absl::string_view kReservedIdentityPrefix = "linesign:";

// The identity of every caller when tls.insecure is set.
inline constexpr absl::string_view kInsecureIdentity = "anonymous";

// kForwardedCertificateHeader is the request header in which a trusted proxy (tls.trusted_proxies) forwards the
// station's certificate: URL-escaped PEM, as nginx's $ssl_client_escaped_cert writes it.
inline constexpr absl::string_view kForwardedCertificateHeader = "x-linesign-client-cert";
// The largest forwarded certificate accepted, escaped.
inline constexpr size_t kMaxForwardedCertificateBytes = 16 * 1024;

// CallerCertificate is the certificate a caller is known by: the connection's own, or the one a trusted proxy
// forwarded (then `proxy` names the proxy and the chain is empty: intermediates come from tls.client_ca_file).
struct CallerCertificate {
  std::string leaf_pem;
  std::string chain_pem;
  std::string proxy;
};

class Authenticator {
 public:
  // Create loads the client CA bundle and CRLs named by `tls`, and linesign's issuing CA chain from
  // `issuing_chain_file` (ca.chain_file: the issuing CA first). InvalidArgument naming the field when a file is
  // missing or holds no certificate / CRL, or when the bundle trusts the issuing CA or a CA above it while
  // tls.require_station_marker is off (device certificates could then authenticate).
  static absl::StatusOr<std::unique_ptr<Authenticator>> Create(const v1::TlsConfig& tls,
                                                               const std::string& issuing_chain_file);
  ~Authenticator();

  // Authenticate verifies `leaf_pem` (the client certificate, "" when none was sent) with the untrusted
  // intermediates in `chain_pem` (the peer's chain as sent, may include the leaf) at `now`, and returns the
  // identity. Unauthenticated with the reason otherwise.
  absl::StatusOr<std::string> Authenticate(absl::string_view leaf_pem, absl::string_view chain_pem,
                                           absl::Time now) const;

  // Resolve returns the certificate that stands for the caller of a connection whose client certificate is
  // `leaf_pem` (with `chain_pem`) and whose request carried `forwarded` (the kForwardedCertificateHeader value,
  // nullopt when absent): the connection's own unless its verified identity is one of tls.trusted_proxies, in
  // which case the forwarded one (URL-unescaped, not verified yet: Authenticate it). Unauthenticated when a caller
  // that is not a trusted proxy sends the header (a station identity in plaintext is never taken on trust), when
  // a trusted proxy sends none, or when the header is malformed, over kMaxForwardedCertificateBytes or not
  // exactly one PEM certificate; the connection's own refusal when it does not authenticate.
  absl::StatusOr<CallerCertificate> Resolve(absl::string_view leaf_pem, absl::string_view chain_pem,
                                            std::optional<absl::string_view> forwarded, absl::Time now) const;
  // IsTrustedProxy says whether `identity` is one of tls.trusted_proxies.
  bool IsTrustedProxy(absl::string_view identity) const;

  // NotAfter returns the notAfter of the client certificate `leaf_pem` (InfinitePast when it cannot be read): a
  // caller that keeps an authentication for a while (a stream) must not keep it past this.
  static absl::Time NotAfter(absl::string_view leaf_pem);

  // Reload re-reads tls.client_ca_file and tls.crl_files from `tls` (the same files, possibly rewritten) and
  // drops every cached result. On an error (naming the field; including a bundle that now trusts linesign's issuing
  // CA without tls.require_station_marker) the trust in force stays as it was.
  absl::Status Reload(const v1::TlsConfig& tls);
  // generation counts successful Reloads: a long-lived caller (a stream) that authenticated under an older
  // generation must authenticate again.
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }

  bool insecure() const { return insecure_; }

  // How long a verified certificate is trusted without verifying it again (a CRL that expires meanwhile is
  // noticed within this time).
  static constexpr absl::Duration kSuccessCacheTime = absl::Minutes(5);

 private:
  // Trust is the CA bundle and CRLs in force; replaced whole by Reload.
  struct Trust {
    OsslPtr<X509_STORE> store;
    bool check_crls = false;
  };
  absl::StatusOr<std::shared_ptr<const Trust>> LoadTrust(const v1::TlsConfig& tls) const;
  struct Cached {
    absl::StatusOr<std::string> identity;
    absl::Time valid_until;
  };
  Authenticator() = default;
  Cached Verify(const Trust& trust, absl::string_view leaf_pem, absl::string_view chain_pem, absl::Time now) const;
  absl::StatusOr<std::string> IdentityOf(X509* leaf) const;

  bool insecure_ = false;
  bool require_marker_ = false;  // tls.require_station_marker
  std::string identity_source_;  // subject_cn, uri_san, dns_san
  std::vector<std::string> trusted_proxies_;  // tls.trusted_proxies
  std::string issuing_chain_file_;
  std::vector<OsslPtr<X509>> issuing_chain_;  // ca.chain_file: linesign's issuing CA first, then the CAs above it

  std::atomic<uint64_t> generation_{0};
  mutable std::mutex mu_;
  std::shared_ptr<const Trust> trust_;                      // guarded by mu_
  mutable absl::flat_hash_map<std::string, Cached> cache_;  // by SHA-256 of the leaf PEM; guarded by mu_
};

}  // namespace linesign::auth

#endif  // LINESIGN_SERVER_AUTH_AUTHENTICATOR_H_
