#include "server/auth/authenticator.h"

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <ctime>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/auth/station_credential.h"

namespace linesign::auth {
namespace {

constexpr size_t kMaxCachedCertificates = 10000;
constexpr size_t kMaxIdentityBytes = 128;
// A refusal is re-checked after this long (a certificate that was not yet valid becomes usable; a fixed CA or CRL
// file is picked up at once by Reload).
constexpr absl::Duration kRefusalCacheTime = absl::Seconds(30);

absl::Time ToTime(const ASN1_TIME* t) {
  struct tm tm = {};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return absl::InfinitePast();
  return absl::FromTimeT(timegm(&tm));
}

std::string SubjectText(X509* cert) {
  OsslPtr<BIO> bio(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, std::min<long>(n, 200));
}

std::string SerialText(X509* cert) {
  OsslPtr<BIGNUM> bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr));
  char* hex = BN_bn2hex(bn.get());
  std::string out = hex != nullptr ? hex : "?";
  OPENSSL_free(hex);
  return out;
}

absl::Status Refuse(absl::string_view why) { return absl::UnauthenticatedError(why); }

absl::Status CheckIdentity(absl::string_view id, absl::string_view source) {
  if (id.empty()) return Refuse(absl::StrCat("client certificate has an empty ", source));
  if (id.size() > kMaxIdentityBytes) {
    return Refuse(absl::StrCat("client certificate ", source, " of ", id.size(), " bytes exceeds 128"));
  }
  for (unsigned char c : id) {
    if (c < 0x20 || c == 0x7f) return Refuse(absl::StrCat("client certificate ", source, " has control characters"));
  }
  // The server's own requests (renewals, the AWS IoT verification certificate) carry a "linesign:" requester
  // identity in the store's (station, request_id) key: no station may share that namespace.
  if (absl::StartsWithIgnoreCase(id, kReservedIdentityPrefix)) {
    return Refuse(absl::StrCat("client certificate ", source, " '", id, "' uses the prefix '",
                               kReservedIdentityPrefix, "' reserved for the server's own requests"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<OsslPtr<X509_CRL>>> LoadCrls(const std::string& path) {
  LINESIGN_ASSIGN_OR_RETURN(std::string data, ReadFile(path));
  std::vector<OsslPtr<X509_CRL>> out;
  OsslPtr<BIO> bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
  while (X509_CRL* crl = PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr)) out.emplace_back(crl);
  OpenSslErrors();
  if (out.empty()) {
    const auto* p = reinterpret_cast<const unsigned char*>(data.data());
    if (X509_CRL* crl = d2i_X509_CRL(nullptr, &p, static_cast<long>(data.size()))) out.emplace_back(crl);
    OpenSslErrors();
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat(path, " holds no PEM or DER CRL"));
  return out;
}

// SameCa says whether `a` and `b` are the same CA: the same subject name (a renewed or re-keyed certificate of the
// same CA) or the same public key.
bool SameCa(X509* a, X509* b) {
  return X509_NAME_cmp(X509_get_subject_name(a), X509_get_subject_name(b)) == 0 ||
         EVP_PKEY_eq(X509_get0_pubkey(a), X509_get0_pubkey(b)) == 1;
}

// OnlyTrustMatters lets a verification fail only for want of a trust anchor or a valid issuer signature: whether
// a chain is expired, or its CAs' usages or policies fit, does not change whom the bundle trusts.
int OnlyTrustMatters(int ok, X509_STORE_CTX* ctx) {
  if (ok == 1) return 1;
  switch (X509_STORE_CTX_get_error(ctx)) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
    case X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE:
    case X509_V_ERR_UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY:
      return 0;
    default:
      return 1;
  }
}

// TrustsIssuingCa says whether a client CA bundle (`bundle`, loaded into `store`) trusts linesign's issuing CA
// `chain[0]` or a CA above it: one of the chain's CAs is in the bundle, or the issuing CA verifies against the
// bundle with the chain's other certificates as intermediates (a partial chain is enough). Every device
// certificate would then chain to a trusted CA.
bool TrustsIssuingCa(X509_STORE* store, const std::vector<OsslPtr<X509>>& bundle,
                     const std::vector<OsslPtr<X509>>& chain) {
  for (const auto& c : chain) {
    for (const auto& b : bundle) {
      if (SameCa(c.get(), b.get())) return true;
    }
  }
  OsslPtr<STACK_OF(X509)> untrusted(sk_X509_new_null());
  for (size_t i = 1; i < chain.size(); ++i) sk_X509_push(untrusted.get(), X509_dup(chain[i].get()));
  OsslPtr<X509_STORE_CTX> ctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(ctx.get(), store, chain[0].get(), untrusted.get());
  X509_STORE_CTX_set_flags(ctx.get(), X509_V_FLAG_PARTIAL_CHAIN | X509_V_FLAG_NO_CHECK_TIME);
  X509_STORE_CTX_set_verify_cb(ctx.get(), OnlyTrustMatters);
  bool trusted = X509_verify_cert(ctx.get()) == 1;
  OpenSslErrors();
  return trusted;
}

// HasStationEku says whether `cert` carries kStationEkuOid in its extendedKeyUsage.
bool HasStationEku(X509* cert) {
  static const ASN1_OBJECT* const kMarker = OBJ_txt2obj(kStationEkuOid, 1);
  auto* ekus = static_cast<EXTENDED_KEY_USAGE*>(X509_get_ext_d2i(cert, NID_ext_key_usage, nullptr, nullptr));
  bool found = false;
  for (int i = 0; ekus != nullptr && i < sk_ASN1_OBJECT_num(ekus); ++i) {
    if (OBJ_cmp(sk_ASN1_OBJECT_value(ekus, i), kMarker) == 0) found = true;
  }
  EXTENDED_KEY_USAGE_free(ekus);
  OpenSslErrors();
  return found;
}

}  // namespace

Authenticator::~Authenticator() = default;

absl::StatusOr<std::shared_ptr<const Authenticator::Trust>> Authenticator::LoadTrust(
    const v1::TlsConfig& tls) const {
  auto trust = std::make_shared<Trust>();
  trust->store.reset(X509_STORE_new());
  auto bundle = ReadFile(tls.client_ca_file());
  if (!bundle.ok()) return absl::InvalidArgumentError(absl::StrCat("tls.client_ca_file: ", bundle.status().message()));
  auto cas = ParseCertificatesPem(*bundle, tls.client_ca_file());
  if (!cas.ok()) return absl::InvalidArgumentError(absl::StrCat("tls.client_ca_file: ", cas.status().message()));
  for (auto& ca : *cas) X509_STORE_add_cert(trust->store.get(), ca.get());
  if (!tls.require_station_marker() && TrustsIssuingCa(trust->store.get(), *cas, issuing_chain_)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tls.client_ca_file: ", tls.client_ca_file(), " trusts linesign's issuing CA '",
        SubjectText(issuing_chain_.front().get()), "' (ca.chain_file ", issuing_chain_file_,
        ") or a CA above it, so every device certificate issued through SignCsr would authenticate as whatever its "
        "CN or SAN says, administrator included. Use a station CA of its own for tls.client_ca_file, or set "
        "tls.require_station_marker: true and give every station and administrator certificate ",
        kStationEkuName, " (see README, \"Who is a station\")"));
  }
  for (const auto& path : tls.crl_files()) {
    auto crls = LoadCrls(path);
    if (!crls.ok()) return absl::InvalidArgumentError(absl::StrCat("tls.crl_files: ", crls.status().message()));
    for (auto& crl : *crls) X509_STORE_add_crl(trust->store.get(), crl.get());
    trust->check_crls = true;
  }
  return trust;
}

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::Create(const v1::TlsConfig& tls,
                                                                     const std::string& issuing_chain_file) {
  std::unique_ptr<Authenticator> a(new Authenticator());
  if (tls.insecure()) {
    a->insecure_ = true;
    return a;
  }
  a->identity_source_ = tls.identity().empty() ? "subject_cn" : tls.identity();
  a->require_marker_ = tls.require_station_marker();
  a->trusted_proxies_.assign(tls.trusted_proxies().begin(), tls.trusted_proxies().end());
  a->issuing_chain_file_ = issuing_chain_file;
  auto chain_pem = ReadFile(issuing_chain_file);
  if (!chain_pem.ok()) return absl::InvalidArgumentError(absl::StrCat("ca.chain_file: ", chain_pem.status().message()));
  auto chain = ParseCertificatesPem(*chain_pem, issuing_chain_file);
  if (!chain.ok()) return absl::InvalidArgumentError(absl::StrCat("ca.chain_file: ", chain.status().message()));
  a->issuing_chain_ = *std::move(chain);
  LINESIGN_ASSIGN_OR_RETURN(a->trust_, a->LoadTrust(tls));
  return a;
}

absl::Status Authenticator::Reload(const v1::TlsConfig& tls) {
  if (insecure_) return absl::OkStatus();
  LINESIGN_ASSIGN_OR_RETURN(std::shared_ptr<const Trust> trust, LoadTrust(tls));
  std::lock_guard<std::mutex> lock(mu_);
  trust_ = std::move(trust);
  cache_.clear();
  generation_.fetch_add(1, std::memory_order_acq_rel);
  return absl::OkStatus();
}

bool Authenticator::IsTrustedProxy(absl::string_view identity) const {
  return std::find(trusted_proxies_.begin(), trusted_proxies_.end(), identity) != trusted_proxies_.end();
}

absl::StatusOr<CallerCertificate> Authenticator::Resolve(absl::string_view leaf_pem, absl::string_view chain_pem,
                                                        std::optional<absl::string_view> forwarded,
                                                        absl::Time now) const {
  if (trusted_proxies_.empty()) {
    if (forwarded.has_value()) {
      return Refuse(absl::StrCat("the ", kForwardedCertificateHeader, " header is refused: no trusted proxy is "
                                 "configured (tls.trusted_proxies), and a station identity sent in a header is never "
                                 "taken on trust"));
    }
    return CallerCertificate{std::string(leaf_pem), std::string(chain_pem), ""};
  }
  LINESIGN_ASSIGN_OR_RETURN(std::string peer, Authenticate(leaf_pem, chain_pem, now));
  if (!IsTrustedProxy(peer)) {
    if (forwarded.has_value()) {
      return Refuse(absl::StrCat("the ", kForwardedCertificateHeader, " header is refused from '", peer,
                                 "', which is not a trusted proxy (tls.trusted_proxies)"));
    }
    return CallerCertificate{std::string(leaf_pem), std::string(chain_pem), ""};
  }
  if (!forwarded.has_value() || forwarded->empty()) {
    return Refuse(absl::StrCat("trusted proxy '", peer, "' forwarded no station certificate (",
                               kForwardedCertificateHeader, "): a proxy is not a station"));
  }
  if (forwarded->size() > kMaxForwardedCertificateBytes) {
    return Refuse(absl::StrCat("the ", kForwardedCertificateHeader, " header from proxy '", peer, "' has ",
                               forwarded->size(), " bytes; at most ", kMaxForwardedCertificateBytes));
  }
  std::string pem;
  pem.reserve(forwarded->size());
  for (size_t i = 0; i < forwarded->size(); ++i) {
    char c = (*forwarded)[i];
    if (c != '%') {
      pem.push_back(c);
      continue;
    }
    auto hex = [](char h) -> int {
      if (h >= '0' && h <= '9') return h - '0';
      if (h >= 'a' && h <= 'f') return h - 'a' + 10;
      if (h >= 'A' && h <= 'F') return h - 'A' + 10;
      return -1;
    };
    int hi = i + 2 < forwarded->size() ? hex((*forwarded)[i + 1]) : -1;
    int lo = i + 2 < forwarded->size() ? hex((*forwarded)[i + 2]) : -1;
    if (hi < 0 || lo < 0) {
      return Refuse(absl::StrCat("the ", kForwardedCertificateHeader, " header from proxy '", peer,
                                 "' has a malformed %-escape at byte ", i));
    }
    pem.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  auto certs = ParseCertificatesPem(pem, "forwarded certificate");
  if (!certs.ok() || certs->size() != 1) {
    return Refuse(absl::StrCat("the ", kForwardedCertificateHeader, " header from proxy '", peer,
                               "' is not exactly one PEM certificate"));
  }
  return CallerCertificate{std::move(pem), "", std::move(peer)};
}

absl::Time Authenticator::NotAfter(absl::string_view leaf_pem) {
  auto certs = ParseCertificatesPem(leaf_pem, "client certificate");
  if (!certs.ok() || certs->empty()) return absl::InfinitePast();
  return ToTime(X509_get0_notAfter((*certs)[0].get()));
}

absl::StatusOr<std::string> Authenticator::Authenticate(absl::string_view leaf_pem, absl::string_view chain_pem,
                                                        absl::Time now) const {
  if (insecure_) return std::string(kInsecureIdentity);
  if (leaf_pem.empty()) {
    return Refuse("no client certificate: every RPC needs a station certificate (mTLS) from a trusted station CA");
  }
  std::string key = Sha256(leaf_pem);
  std::shared_ptr<const Trust> trust;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = cache_.find(key);
    if (it != cache_.end() && now < it->second.valid_until) return it->second.identity;
    trust = trust_;
  }
  Cached result = Verify(*trust, leaf_pem, chain_pem, now);
  std::lock_guard<std::mutex> lock(mu_);
  if (trust != trust_) return result.identity;  // reloaded meanwhile: do not cache a verdict of the old trust
  if (cache_.size() >= kMaxCachedCertificates) cache_.clear();
  cache_[key] = result;
  return result.identity;
}

Authenticator::Cached Authenticator::Verify(const Trust& trust, absl::string_view leaf_pem,
                                            absl::string_view chain_pem, absl::Time now) const {
  Cached refused{absl::UnknownError(""), now + kRefusalCacheTime};
  OsslPtr<BIO> bio(BIO_new_mem_buf(leaf_pem.data(), static_cast<int>(leaf_pem.size())));
  OsslPtr<X509> leaf(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (leaf == nullptr) {
    OpenSslErrors();
    refused.identity = Refuse("client certificate cannot be parsed");
    return refused;
  }
  OsslPtr<STACK_OF(X509)> untrusted(sk_X509_new_null());
  OsslPtr<BIO> chain_bio(BIO_new_mem_buf(chain_pem.data(), static_cast<int>(chain_pem.size())));
  while (X509* c = PEM_read_bio_X509(chain_bio.get(), nullptr, nullptr, nullptr)) sk_X509_push(untrusted.get(), c);
  OpenSslErrors();

  OsslPtr<X509_STORE_CTX> ctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(ctx.get(), trust.store.get(), leaf.get(), untrusted.get());
  X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_CLIENT);
  X509_STORE_CTX_set_time(ctx.get(), 0, absl::ToTimeT(now));
  if (trust.check_crls) X509_STORE_CTX_set_flags(ctx.get(), X509_V_FLAG_CRL_CHECK);
  if (X509_verify_cert(ctx.get()) != 1) {
    int err = X509_STORE_CTX_get_error(ctx.get());
    OpenSslErrors();
    std::string who = absl::StrCat("client certificate '", SubjectText(leaf.get()), "'");
    switch (err) {
      case X509_V_ERR_CERT_HAS_EXPIRED:
        refused.identity = Refuse(absl::StrCat(who, " expired at ",
                                               absl::FormatTime(ToTime(X509_get0_notAfter(leaf.get())))));
        break;
      case X509_V_ERR_CERT_NOT_YET_VALID:
        refused.identity = Refuse(absl::StrCat(who, " is not valid before ",
                                               absl::FormatTime(ToTime(X509_get0_notBefore(leaf.get())))));
        break;
      case X509_V_ERR_CERT_REVOKED:
        refused.identity = Refuse(absl::StrCat(who, " (serial ", SerialText(leaf.get()), ") is revoked"));
        break;
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
      case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
      case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
      case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        refused.identity = Refuse(absl::StrCat(who, " is not issued by a trusted station CA (tls.client_ca_file)"));
        break;
      case X509_V_ERR_UNABLE_TO_GET_CRL:
        refused.identity = Refuse(absl::StrCat("no CRL for the issuer of ", who, " (tls.crl_files)"));
        break;
      case X509_V_ERR_CRL_HAS_EXPIRED:
        refused.identity = Refuse(absl::StrCat("the CRL for the issuer of ", who, " is out of date (tls.crl_files)"));
        break;
      case X509_V_ERR_INVALID_PURPOSE:
        refused.identity = Refuse(absl::StrCat(who, " is not for client authentication (extendedKeyUsage)"));
        break;
      default:
        refused.identity = Refuse(absl::StrCat(who, " does not verify: ", X509_verify_cert_error_string(err)));
    }
    return refused;
  }
  // Who is a station: never a certificate linesign's issuing CA signed (whatever the configuration says), and,
  // with tls.require_station_marker, only a certificate carrying the station EKU.
  STACK_OF(X509)* verified = X509_STORE_CTX_get0_chain(ctx.get());
  for (int i = 1; i < sk_X509_num(verified); ++i) {
    if (SameCa(sk_X509_value(verified, i), issuing_chain_.front().get())) {
      refused.identity = Refuse(absl::StrCat(
          "client certificate '", SubjectText(leaf.get()), "' is a device certificate (issued by linesign's issuing CA '",
          SubjectText(issuing_chain_.front().get()), "'): device certificates never authenticate as a station or "
          "administrator"));
      return refused;
    }
  }
  if (require_marker_ && !HasStationEku(leaf.get())) {
    refused.identity = Refuse(absl::StrCat("client certificate '", SubjectText(leaf.get()),
                                           "' is not a station credential: it lacks ", kStationEkuName,
                                           " (tls.require_station_marker)"));
    return refused;
  }
  auto identity = IdentityOf(leaf.get());
  if (!identity.ok()) {
    refused.identity = identity.status();
    return refused;
  }
  return Cached{*std::move(identity), std::min(ToTime(X509_get0_notAfter(leaf.get())), now + kSuccessCacheTime)};
}

absl::StatusOr<std::string> Authenticator::IdentityOf(X509* leaf) const {
  if (identity_source_ == "subject_cn") {
    X509_NAME* name = X509_get_subject_name(leaf);
    int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (i < 0) return Refuse("client certificate has no subject CN (tls.identity is subject_cn)");
    unsigned char* utf8 = nullptr;
    int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i)));
    if (n < 0) return Refuse("client certificate subject CN cannot be read");
    std::string cn(reinterpret_cast<char*>(utf8), n);
    OPENSSL_free(utf8);
    LINESIGN_RETURN_IF_ERROR(CheckIdentity(cn, "subject CN"));
    return cn;
  }
  const int want = identity_source_ == "uri_san" ? GEN_URI : GEN_DNS;
  const char* what = identity_source_ == "uri_san" ? "URI SAN" : "DNS SAN";
  OsslPtr<GENERAL_NAMES> names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(leaf, NID_subject_alt_name, nullptr, nullptr)));
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), i);
    if (gn->type != want) continue;
    const ASN1_IA5STRING* s = want == GEN_URI ? gn->d.uniformResourceIdentifier : gn->d.dNSName;
    std::string id(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), ASN1_STRING_length(s));
    LINESIGN_RETURN_IF_ERROR(CheckIdentity(id, what));
    return id;
  }
  return Refuse(absl::StrCat("client certificate has no ", what, " (tls.identity is ", identity_source_, ")"));
}

}  // namespace linesign::auth
