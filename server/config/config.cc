#include "server/config/config.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <openssl/objects.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <regex>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "common/der.h"
#include "common/openssl_util.h"
#include "common/status_macros.h"
#include "common/utf8.h"
#include "hsm/pkcs11_uri.h"
#include "re2/re2.h"
#include "server/auth/station_credential.h"
#include "server/iot/iot_config.h"
#include "server/lifecycle/webhook_url.h"
#include "server/store/postgres/connection_string.h"

namespace linesign::config {

// CheckCrlDistributionPoint: what a certificate may carry as its CRL distribution point (an IA5String URI that
// strict parsers accept): an http://, https:// or ldap:// URL with a host, printable ASCII without spaces (anything
// else percent-encoded, each '%' followed by two hex digits), at most kMaxCrlDistributionPointBytes. Empty is
// fine (no extension).
absl::Status CheckCrlDistributionPoint(const std::string& url) {
  if (url.empty()) return absl::OkStatus();
  if (url.size() > kMaxCrlDistributionPointBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("must be at most ", kMaxCrlDistributionPointBytes, " bytes (it has ", url.size(), ")"));
  }
  for (size_t i = 0; i < url.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(url[i]);
    if (c <= 0x20 || c >= 0x7f) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "holds the byte 0x%02X at offset %d: the URL must be printable ASCII without spaces (percent-encode the "
          "rest)",
          c, i));
    }
    if (c == '%' && (i + 2 >= url.size() || !absl::ascii_isxdigit(static_cast<unsigned char>(url[i + 1])) ||
                     !absl::ascii_isxdigit(static_cast<unsigned char>(url[i + 2])))) {
      return absl::InvalidArgumentError(
          absl::StrCat("has a '%' at offset ", i, " that is not followed by two hexadecimal digits"));
    }
  }
  absl::string_view rest = url;
  if (!absl::ConsumePrefix(&rest, "http://") && !absl::ConsumePrefix(&rest, "https://") &&
      !absl::ConsumePrefix(&rest, "ldap://")) {
    return absl::InvalidArgumentError("must be an http://, https:// or ldap:// URL (lower-case scheme)");
  }
  if (rest.empty() || rest[0] == '/' || rest[0] == '?' || rest[0] == '#' || rest[0] == ':') {
    return absl::InvalidArgumentError("has no host after the scheme");
  }
  return absl::OkStatus();
}

namespace {

using google::protobuf::Value;

// Configuration files are shallow; anything deeper is a mistake or an alias cycle ("a: &x [*x]").
constexpr int kMaxYamlDepth = 16;

absl::Status YamlToValue(const YAML::Node& node, const std::string& path, Value* out, int depth = 0) {
  if (depth > kMaxYamlDepth) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": nested more than ", kMaxYamlDepth,
                                                   " levels deep (or a recursive alias)"));
  }
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      out->set_null_value(google::protobuf::NULL_VALUE);
      return absl::OkStatus();
    case YAML::NodeType::Scalar: {
      const std::string& s = node.Scalar();
      if (node.Tag() == "!") {  // quoted: always a string
        out->set_string_value(s);
        return absl::OkStatus();
      }
      int64_t i;
      double d;
      if (s == "true" || s == "false") {
        out->set_bool_value(s == "true");
      } else if (absl::SimpleAtoi(s, &i)) {
        out->set_number_value(static_cast<double>(i));
      } else if (absl::SimpleAtod(s, &d) && std::isfinite(d)) {
        out->set_number_value(d);
      } else if (s == "~" || s == "null") {
        out->set_null_value(google::protobuf::NULL_VALUE);
      } else {
        out->set_string_value(s);
      }
      return absl::OkStatus();
    }
    case YAML::NodeType::Sequence: {
      auto* list = out->mutable_list_value();
      for (size_t i = 0; i < node.size(); ++i) {
        LINESIGN_RETURN_IF_ERROR(
            YamlToValue(node[i], absl::StrCat(path, "[", i, "]"), list->add_values(), depth + 1));
      }
      return absl::OkStatus();
    }
    case YAML::NodeType::Map: {
      auto* fields = out->mutable_struct_value()->mutable_fields();
      for (const auto& kv : node) {
        if (kv.first.Type() != YAML::NodeType::Scalar) {
          return absl::InvalidArgumentError(absl::StrCat(path.empty() ? "(top level)" : path,
                                                         ": keys must be plain strings"));
        }
        const std::string key = kv.first.Scalar();
        std::string child = path.empty() ? key : absl::StrCat(path, ".", key);
        if (fields->contains(key)) return absl::InvalidArgumentError(absl::StrCat(child, ": given twice"));
        LINESIGN_RETURN_IF_ERROR(YamlToValue(kv.second, child, &(*fields)[key], depth + 1));
      }
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(path, ": unsupported YAML node"));
}

absl::Status FieldError(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

absl::Status CheckReadable(absl::string_view field, const std::string& path) {
  if (path.empty()) return FieldError(field, "required");
  if (access(path.c_str(), R_OK) != 0) {
    return FieldError(field, absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

const std::set<std::string>& KeyTypes() {
  static const auto* k = new std::set<std::string>{"ec-p256", "ec-p384", "ed25519", "rsa"};
  return *k;
}
const std::set<std::string>& SanTypes() {
  static const auto* k = new std::set<std::string>{"dns", "ip", "uri", "email"};
  return *k;
}

const std::set<std::string>& KeyUsages() {
  static const auto* k = new std::set<std::string>{"digitalSignature", "nonRepudiation", "keyEncipherment",
                                                   "dataEncipherment", "keyAgreement"};
  return *k;
}

absl::Status CheckPattern(absl::string_view field, const std::string& pattern) {
  RE2 re(pattern, RE2::Quiet);
  if (!re.ok()) return FieldError(field, absl::StrCat("bad RE2 pattern '", pattern, "': ", re.error()));
  return absl::OkStatus();
}

// CheckPrivate refuses a secret file others may read (mode o+r), like the PIN file.
absl::Status CheckPrivate(absl::string_view field, const std::string& path) {
  LINESIGN_RETURN_IF_ERROR(CheckReadable(field, path));
  struct stat st;
  if (stat(path.c_str(), &st) == 0 && (st.st_mode & S_IROTH) != 0) {
    return FieldError(field, absl::StrCat(path, " is readable by others; chmod o-r it"));
  }
  return absl::OkStatus();
}

// CheckNotStationMarker refuses, in a profile, the station EKU (auth::kStationEkuOid) and anyExtendedKeyUsage
// (which a verifier may take for any usage, the station EKU included): a device certificate must never be able to
// pass for a station or administrator credential. `value` is a name or a dotted OID, compared as an OID.
absl::Status CheckNotStationMarker(const std::string& field, const std::string& value) {
  static const ASN1_OBJECT* const kMarker = OBJ_txt2obj(auth::kStationEkuOid, 1);
  std::unique_ptr<ASN1_OBJECT, decltype(&ASN1_OBJECT_free)> obj(OBJ_txt2obj(value.c_str(), 0), ASN1_OBJECT_free);
  OpenSslErrors();
  if (obj == nullptr) return absl::OkStatus();  // not an OID at all: refused later as unknown
  if (OBJ_cmp(obj.get(), kMarker) == 0) {
    return FieldError(field, absl::StrCat("'", value, "' is ", auth::kStationEkuName,
                                          ", which marks station and administrator credentials; no profile may "
                                          "issue it (tls.require_station_marker)"));
  }
  if (OBJ_obj2nid(obj.get()) == NID_anyExtendedKeyUsage) {
    return FieldError(field, absl::StrCat("'", value, "' is anyExtendedKeyUsage (2.5.29.37.0), which would let a "
                                          "device certificate pass for any usage, station credentials included; "
                                          "list the usages the devices need"));
  }
  return absl::OkStatus();
}

absl::Status ValidateProfile(const std::string& f, const v1::Profile& p) {
  if (p.max_validity_days() < 1 || p.max_validity_days() > 3650) {
    return FieldError(f + ".max_validity_days", "must be 1 to 3650");
  }
  if (p.validity_days() < 1 || p.validity_days() > p.max_validity_days()) {
    return FieldError(f + ".validity_days", absl::StrCat("must be 1 to max_validity_days (", p.max_validity_days(),
                                                         ")"));
  }
  if (p.backdate_seconds() > 86400) return FieldError(f + ".backdate_seconds", "must be 0 to 86400");
  if (p.renew_before_days() != 0 && p.renew_before_days() >= p.validity_days()) {
    return FieldError(f + ".renew_before_days",
                      absl::StrCat("must be 1 to validity_days - 1 (", p.validity_days() - 1,
                                   "): a certificate due from the moment it is issued would be renewed forever"));
  }
  if (!p.renewal().empty() && p.renewal() != "managed" && p.renewal() != "notify" && p.renewal() != "off") {
    return FieldError(f + ".renewal", absl::StrCat("must be managed, notify or off, not '", p.renewal(), "'"));
  }
  for (const auto& k : p.key_types()) {
    if (!KeyTypes().contains(k)) {
      return FieldError(f + ".key_types", absl::StrCat("unknown '", k, "' (ec-p256, ec-p384, ed25519, rsa)"));
    }
  }
  if (p.rsa_min_bits() < 2048 || p.rsa_max_bits() > 4096 || p.rsa_min_bits() > p.rsa_max_bits()) {
    return FieldError(f + ".rsa_min_bits", "RSA bounds must satisfy 2048 <= rsa_min_bits <= rsa_max_bits <= 4096");
  }
  for (const auto& e : p.extended_key_usages()) {
    if (e == "none" && p.extended_key_usages_size() == 1) continue;
    LINESIGN_RETURN_IF_ERROR(CheckNotStationMarker(f + ".extended_key_usages", e));
    int nid = OBJ_sn2nid(e.c_str());
    if (nid == NID_undef && der::Oid(e).empty()) {
      return FieldError(f + ".extended_key_usages", absl::StrCat("unknown usage '", e, "'"));
    }
  }
  for (const auto& u : p.key_usages()) {
    if (!KeyUsages().contains(u)) {
      return FieldError(f + ".key_usages", absl::StrCat("unknown '", u, "' (digitalSignature, nonRepudiation, "
                                                        "keyEncipherment, dataEncipherment, keyAgreement)"));
    }
  }
  std::set<std::string> allowed;
  for (const auto& a : p.subject_attributes()) {
    if (OBJ_sn2nid(a.c_str()) == NID_undef) {
      return FieldError(f + ".subject_attributes", absl::StrCat("unknown attribute '", a, "'"));
    }
    allowed.insert(a);
  }
  for (const auto& a : p.required_subject_attributes()) {
    if (!allowed.contains(a)) {
      return FieldError(f + ".required_subject_attributes",
                        absl::StrCat("'", a, "' is required but not in subject_attributes"));
    }
  }
  for (const auto& [attr, pattern] : p.subject_patterns()) {
    if (!allowed.contains(attr)) {
      return FieldError(f + ".subject_patterns." + attr, "the attribute is not in subject_attributes");
    }
    LINESIGN_RETURN_IF_ERROR(CheckPattern(f + ".subject_patterns." + attr, pattern));
  }
  for (const auto& s : p.san_types()) {
    if (!SanTypes().contains(s)) return FieldError(f + ".san_types", absl::StrCat("unknown '", s, "'"));
  }
  for (const auto& [type, pattern] : p.san_patterns()) {
    if (std::find(p.san_types().begin(), p.san_types().end(), type) == p.san_types().end()) {
      return FieldError(f + ".san_patterns." + type, "the type is not in san_types");
    }
    LINESIGN_RETURN_IF_ERROR(CheckPattern(f + ".san_patterns." + type, pattern));
  }
  if (!p.san_from_subject().empty()) {
    if (p.san_from_subject() != "dns") return FieldError(f + ".san_from_subject", "must be \"dns\" or unset");
    if (!p.san_types().empty()) {
      return FieldError(f + ".san_from_subject", "cannot be combined with san_types (SANs come from the subject)");
    }
    if (!allowed.contains("CN")) return FieldError(f + ".san_from_subject", "needs CN in subject_attributes");
  }
  if (p.allow_wildcard_dns() && p.san_from_subject() != "dns" &&
      std::find(p.san_types().begin(), p.san_types().end(), "dns") == p.san_types().end()) {
    return FieldError(f + ".allow_wildcard_dns", "needs \"dns\" in san_types or san_from_subject: dns");
  }
  if (p.max_subject_value_bytes() < 1 || p.max_subject_value_bytes() > 1024) {
    return FieldError(f + ".max_subject_value_bytes", "must be 1 to 1024");
  }
  if (p.max_san_value_bytes() < 1 || p.max_san_value_bytes() > 1024) {
    return FieldError(f + ".max_san_value_bytes", "must be 1 to 1024");
  }
  if (auto st = CheckCrlDistributionPoint(p.crl_distribution_point()); !st.ok()) {
    return FieldError(f + ".crl_distribution_point", st.message());
  }
  for (const auto& oid : p.policy_oids()) {
    LINESIGN_RETURN_IF_ERROR(CheckNotStationMarker(f + ".policy_oids", oid));
    if (der::Oid(oid).empty()) return FieldError(f + ".policy_oids", absl::StrCat("'", oid, "' is not a dotted OID"));
  }
  return absl::OkStatus();
}

absl::Status ValidateTls(const v1::ServerConfig& c) {
  const auto& t = c.tls();
  if (!c.has_tls()) {
    return FieldError("tls", "required: certificate_file, key_file and client_ca_file (mTLS), or insecure: true "
                             "on a loopback listen address");
  }
  if (t.insecure()) {
    if (t.require_station_marker()) {
      return FieldError("tls.require_station_marker", "cannot be combined with tls.insecure (no client certificates)");
    }
    if (!t.trusted_proxies().empty()) {
      return FieldError("tls.trusted_proxies", "cannot be combined with tls.insecure (no client certificates)");
    }
    if (!IsLoopback(c.listen())) {
      return FieldError("tls.insecure", absl::StrCat("plaintext is allowed only on a loopback address, not ",
                                                     c.listen(), "; configure certificate_file, key_file and "
                                                     "client_ca_file"));
    }
    return absl::OkStatus();
  }
  LINESIGN_RETURN_IF_ERROR(CheckReadable("tls.certificate_file", t.certificate_file()));
  LINESIGN_RETURN_IF_ERROR(CheckPrivate("tls.key_file", t.key_file()));
  LINESIGN_RETURN_IF_ERROR(CheckReadable("tls.client_ca_file", t.client_ca_file()));
  for (const auto& crl : t.crl_files()) LINESIGN_RETURN_IF_ERROR(CheckReadable("tls.crl_files", crl));
  if (t.identity() != "subject_cn" && t.identity() != "uri_san" && t.identity() != "dns_san") {
    return FieldError("tls.identity", absl::StrCat("unknown '", t.identity(), "' (subject_cn, uri_san, dns_san)"));
  }
  if (t.trusted_proxies_size() > 16) {
    return FieldError("tls.trusted_proxies", absl::StrCat(t.trusted_proxies_size(), " entries; at most 16"));
  }
  for (const auto& proxy : t.trusted_proxies()) {
    if (proxy.empty() || proxy.size() > 128) {
      return FieldError("tls.trusted_proxies", "each entry is an identity of 1 to 128 bytes");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateAccess(const v1::ServerConfig& c) {
  if (c.access().empty()) {
    return FieldError("access", "at least one rule is required: without one no station may do anything");
  }
  for (int i = 0; i < c.access_size(); ++i) {
    const auto& r = c.access(i);
    std::string f = absl::StrCat("access[", i, "]");
    if (r.identity().empty() == r.identity_pattern().empty()) {
      return FieldError(f, "exactly one of identity and identity_pattern is required");
    }
    if (!r.identity_pattern().empty()) LINESIGN_RETURN_IF_ERROR(CheckPattern(f + ".identity_pattern",
                                                                              r.identity_pattern()));
    for (const auto& p : r.profiles()) {
      if (!c.profiles().contains(p)) return FieldError(f + ".profiles", absl::StrCat("unknown profile '", p, "'"));
    }
    if (!(r.rate_per_second() >= 0 && r.rate_per_second() <= 1e6)) {
      return FieldError(f + ".rate_per_second", "must be 0 (unlimited) to 1000000");
    }
    if (r.burst() > 1000000) return FieldError(f + ".burst", "must be at most 1000000");
  }
  return absl::OkStatus();
}

absl::Status ValidateLimits(const v1::LimitsConfig& l) {
  if (l.stream_window() < 1 || l.stream_window() > 4096) {
    return FieldError("limits.stream_window", "must be 1 to 4096");
  }
  if (l.stream_window_bytes() < (64 << 10) || l.stream_window_bytes() > (64 << 20)) {
    return FieldError("limits.stream_window_bytes", "must be 65536 to 67108864");
  }
  if (l.max_streams() < 1 || l.max_streams() > 100000) {
    return FieldError("limits.max_streams", "must be 1 to 100000");
  }
  if (l.max_concurrent_streams_per_connection() < 1 || l.max_concurrent_streams_per_connection() > 10000) {
    return FieldError("limits.max_concurrent_streams_per_connection", "must be 1 to 10000");
  }
  if (l.max_connection_idle_seconds() < 1 || l.max_connection_idle_seconds() > 86400) {
    return FieldError("limits.max_connection_idle_seconds", "must be 1 to 86400");
  }
  if (l.handshake_timeout_seconds() < 1 || l.handshake_timeout_seconds() > 300) {
    return FieldError("limits.handshake_timeout_seconds", "must be 1 to 300");
  }
  if (l.grpc_memory_bytes() < (uint64_t{16} << 20) || l.grpc_memory_bytes() > (uint64_t{1} << 40)) {
    return FieldError("limits.grpc_memory_bytes", "must be 16777216 (16 MiB) to 1099511627776 (1 TiB)");
  }
  return absl::OkStatus();
}

void Resolve(const std::string& base, std::string* path) {
  if (!path->empty() && (*path)[0] != '/') *path = absl::StrCat(base, "/", *path);
}

}  // namespace

bool IsLoopback(const std::string& listen) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) return false;
  std::string host = listen.substr(0, colon);
  if (host == "localhost" || host == "[::1]") return true;
  return absl::StartsWith(host, "127.");
}

absl::StatusOr<v1::ServerConfig> ParseConfigYaml(const std::string& yaml) {
  if (!IsValidUtf8(yaml)) return absl::InvalidArgumentError("config is not valid UTF-8 text");
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("config is not valid YAML: ", e.what()));
  }
  if (!root.IsMap()) return absl::InvalidArgumentError("config: the top level must be a mapping");
  Value value;
  LINESIGN_RETURN_IF_ERROR(YamlToValue(root, "", &value));
  std::string json;
  google::protobuf::util::JsonPrintOptions print;
  if (!google::protobuf::util::MessageToJsonString(value, &json, print).ok()) {
    return absl::InternalError("config: cannot convert YAML");
  }
  v1::ServerConfig config;
  google::protobuf::util::JsonParseOptions parse;
  parse.ignore_unknown_fields = false;
  auto st = google::protobuf::util::JsonStringToMessage(json, &config, parse);
  if (!st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("config: ", std::string(st.message())));
  }
  return config;
}

void ApplyDefaults(v1::ServerConfig* config) {
  for (auto& [name, p] : *config->mutable_profiles()) {
    if (p.validity_days() == 0) p.set_validity_days(365);
    if (!p.has_backdate_seconds()) p.set_backdate_seconds(300);
    if (p.key_types().empty()) {
      p.add_key_types("ec-p256");
      p.add_key_types("ec-p384");
    }
    if (p.rsa_min_bits() == 0) p.set_rsa_min_bits(2048);
    if (p.rsa_max_bits() == 0) p.set_rsa_max_bits(4096);
    if (p.extended_key_usages().empty()) p.add_extended_key_usages("clientAuth");
    if (p.subject_attributes().empty()) {
      for (const char* a : {"CN", "O", "OU", "C", "serialNumber"}) p.add_subject_attributes(a);
    }
    if (p.required_subject_attributes().empty()) p.add_required_subject_attributes("CN");
    if (p.key_usages().empty()) p.add_key_usages("digitalSignature");
    if (p.max_subject_value_bytes() == 0) p.set_max_subject_value_bytes(64);
    if (p.max_san_value_bytes() == 0) p.set_max_san_value_bytes(255);
    if (p.max_validity_days() == 0) p.set_max_validity_days(3650);
  }
  if (config->has_tls() && !config->tls().insecure() && config->tls().identity().empty()) {
    config->mutable_tls()->set_identity("subject_cn");
  }
  if (config->default_profile().empty() && config->profiles_size() == 1) {
    config->set_default_profile(config->profiles().begin()->first);
  }
  auto* s = config->mutable_signer();
  if (s->workers() == 0) s->set_workers(std::max(1u, std::thread::hardware_concurrency()));
  if (s->max_batch() == 0) s->set_max_batch(64);
  if (!s->has_max_linger_us()) s->set_max_linger_us(200);
  if (s->queue_size() == 0) s->set_queue_size(4096);
  if (s->max_streams_per_station() == 0) s->set_max_streams_per_station(16);
  auto* l = config->mutable_limits();
  if (l->stream_window() == 0) l->set_stream_window(128);
  if (l->stream_window_bytes() == 0) l->set_stream_window_bytes(2 << 20);
  if (l->max_streams() == 0) l->set_max_streams(512);
  if (l->max_concurrent_streams_per_connection() == 0) l->set_max_concurrent_streams_per_connection(100);
  if (l->max_connection_idle_seconds() == 0) l->set_max_connection_idle_seconds(600);
  if (l->handshake_timeout_seconds() == 0) l->set_handshake_timeout_seconds(10);
  if (l->grpc_memory_bytes() == 0) l->set_grpc_memory_bytes(uint64_t{1} << 30);
  if (config->health_check_interval_ms() == 0) config->set_health_check_interval_ms(2000);
  // The CRL (issue 11): a week, remade at half-life, at most one a second.
  auto* crl = config->mutable_crl();
  if (crl->validity_seconds() == 0) crl->set_validity_seconds(7 * 24 * 3600);
  if (crl->refresh_before_seconds() == 0) crl->set_refresh_before_seconds(crl->validity_seconds() / 2);
  if (crl->min_interval_ms() == 0) crl->set_min_interval_ms(1000);
  if (crl->http_path().empty()) crl->set_http_path("/linesign.crl");
  if (!config->has_http()) config->mutable_http()->set_listen("127.0.0.1:9443");
  if (config->http().tls().empty()) config->mutable_http()->set_tls("off");
  if (config->http().threads() == 0) config->mutable_http()->set_threads(2);
  // Lifecycle (issue 11). A profile's renew_before and renewal mode default in profile::Profile::Compile (the
  // default renew_before depends on validity_days).
  for (auto& [name, p] : *config->mutable_profiles()) {
    if (p.renewal().empty()) p.set_renewal("managed");
  }
  {
    v1::IotConfig* iot = config->mutable_iot();
    if (iot->max_in_flight() == 0) iot->set_max_in_flight(32);
    if (iot->retry_base_ms() == 0) iot->set_retry_base_ms(1000);
    if (iot->retry_max_ms() == 0) iot->set_retry_max_ms(std::max<uint32_t>(300000, iot->retry_base_ms()));
    if (iot->lease_seconds() == 0) iot->set_lease_seconds(120);
    if (iot->poll_interval_ms() == 0) iot->set_poll_interval_ms(200);
  }
  auto* r = config->mutable_renewal();
  if (r->scan_interval_ms() == 0) r->set_scan_interval_ms(60000);
  if (r->batch() == 0) r->set_batch(100);
  auto* e = config->mutable_events();
  if (e->max_watchers() == 0) e->set_max_watchers(16);
  if (e->poll_interval_ms() == 0) e->set_poll_interval_ms(200);
  if (e->has_webhook()) {
    auto* w = e->mutable_webhook();
    if (w->timeout_ms() == 0) w->set_timeout_ms(5000);
    if (w->max_backoff_ms() == 0) w->set_max_backoff_ms(60000);
  }
}

namespace {

// ValidateHttp checks the operator's HTTP listener (`http`).
absl::Status ValidateHttp(const v1::ServerConfig& c) {
  const v1::HttpConfig& h = c.http();
  if (!h.listen().empty() && h.listen().rfind(':') == std::string::npos) {
    return FieldError("http.listen", "must be host:port (or \"\" for no HTTP listener)");
  }
  if (h.tls() != "off" && h.tls() != "same-as-grpc") {
    return FieldError("http.tls", absl::StrCat("'", h.tls(), "' is not one of off, same-as-grpc"));
  }
  if (h.tls() == "same-as-grpc" && c.tls().insecure()) {
    return FieldError("http.tls", "same-as-grpc needs gRPC's TLS, but tls.insecure is set");
  }
  if (h.require_client_certificate() && h.tls() != "same-as-grpc") {
    return FieldError("http.require_client_certificate", "needs http.tls: same-as-grpc");
  }
  if (h.threads() < 1 || h.threads() > 16) return FieldError("http.threads", "must be 1 to 16");
  return absl::OkStatus();
}

}  // namespace

absl::Status Validate(const v1::ServerConfig& c) {
  if (c.listen().empty()) return FieldError("listen", "required (host:port)");
  if (c.listen().rfind(':') == std::string::npos) return FieldError("listen", "must be host:port");

  const auto& h = c.hsm();
  if (!c.has_hsm()) return FieldError("hsm", "required");
  if (!h.development_key_file().empty()) {
    if (!h.module().empty()) return FieldError("hsm.development_key_file", "cannot be combined with hsm.module");
    LINESIGN_RETURN_IF_ERROR(CheckReadable("hsm.development_key_file", h.development_key_file()));
  } else {
    if (h.module().empty()) return FieldError("hsm.module", "required (path of the PKCS#11 module)");
    LINESIGN_RETURN_IF_ERROR(CheckReadable("hsm.module", h.module()));
    if (h.key_uri().empty()) return FieldError("hsm.key_uri", "required (RFC 7512 URI of the CA key)");
    auto uri = hsm::ParsePkcs11Uri(h.key_uri());
    if (!uri.ok()) return FieldError("hsm.key_uri", uri.status().message());
    if (h.pin_file().empty() == h.pin_env().empty()) {
      return FieldError("hsm.pin_file", "exactly one of hsm.pin_file and hsm.pin_env is required");
    }
    if (!h.pin_file().empty()) LINESIGN_RETURN_IF_ERROR(CheckReadable("hsm.pin_file", h.pin_file()));
  }
  if (h.sessions() > 256) return FieldError("hsm.sessions", "must be 0 to 256 (0: one per signer.workers)");

  if (!c.has_ca()) return FieldError("ca", "required");
  LINESIGN_RETURN_IF_ERROR(CheckReadable("ca.chain_file", c.ca().chain_file()));

  switch (c.store().backend_case()) {
    case v1::StoreConfig::kSqlite:
      if (c.store().sqlite().path().empty()) return FieldError("store.sqlite.path", "required");
      break;
    case v1::StoreConfig::kPostgres: {
      const auto& pg = c.store().postgres();
      LINESIGN_RETURN_IF_ERROR(store::postgres::CheckConnectionString("store.postgres.connection", pg.connection()));
      if (!pg.password_file().empty()) {
        LINESIGN_RETURN_IF_ERROR(CheckPrivate("store.postgres.password_file", pg.password_file()));
      }
      break;
    }
    case v1::StoreConfig::BACKEND_NOT_SET:
      return FieldError("store.sqlite", "required (the store's backend: store: {sqlite: {path: FILE}} or "
                                        "store: {postgres: {connection: \"host=... dbname=... user=...\"}})");
  }

  if (c.profiles().empty()) return FieldError("profiles", "at least one profile is required");
  static const std::regex kName("^[A-Za-z0-9_-]{1,64}$");
  for (const auto& [name, p] : c.profiles()) {
    std::string f = absl::StrCat("profiles.", name);
    if (!std::regex_match(name, kName)) return FieldError(f, "name must be 1-64 of [A-Za-z0-9_-]");
    LINESIGN_RETURN_IF_ERROR(ValidateProfile(f, p));
  }
  if (c.default_profile().empty()) {
    return FieldError("default_profile", "required when there is more than one profile");
  }
  if (!c.profiles().contains(c.default_profile())) {
    return FieldError("default_profile", absl::StrCat("'", c.default_profile(), "' is not a key of profiles"));
  }
  const auto& s = c.signer();
  if (s.workers() < 1 || s.workers() > 64) return FieldError("signer.workers", "must be 1 to 64");
  if (s.max_batch() < 1 || s.max_batch() > 4096) return FieldError("signer.max_batch", "must be 1 to 4096");
  if (s.max_linger_us() > 100000) return FieldError("signer.max_linger_us", "must be 0 to 100000");
  if (s.queue_size() < 1 || s.queue_size() > 1000000) return FieldError("signer.queue_size", "must be 1 to 1000000");
  if (s.max_streams_per_station() < 1 || s.max_streams_per_station() > 1024) {
    return FieldError("signer.max_streams_per_station", "must be 1 to 1024");
  }
  LINESIGN_RETURN_IF_ERROR(ValidateLimits(c.limits()));
  if (c.renewal().scan_interval_ms() < 100 || c.renewal().scan_interval_ms() > 86400000) {
    return FieldError("renewal.scan_interval_ms", "must be 100 to 86400000");
  }
  if (c.renewal().batch() < 1 || c.renewal().batch() > 1000) return FieldError("renewal.batch", "must be 1 to 1000");
  if (c.events().max_watchers() < 1 || c.events().max_watchers() > 1024) {
    return FieldError("events.max_watchers", "must be 1 to 1024");
  }
  if (c.events().poll_interval_ms() < 10 || c.events().poll_interval_ms() > 60000) {
    return FieldError("events.poll_interval_ms", "must be 10 to 60000");
  }
  if (c.events().has_webhook()) {
    const auto& w = c.events().webhook();
    if (w.url().empty()) return FieldError("events.webhook.url", "required");
    if (auto url = lifecycle::ParseWebhookUrl(w.url()); !url.ok()) {
      return FieldError("events.webhook.url", url.status().message());
    }
    if (w.timeout_ms() < 100 || w.timeout_ms() > 60000) {
      return FieldError("events.webhook.timeout_ms", "must be 100 to 60000");
    }
    if (w.max_backoff_ms() < 100 || w.max_backoff_ms() > 3600000) {
      return FieldError("events.webhook.max_backoff_ms", "must be 100 to 3600000");
    }
    if (!w.secret_file().empty()) LINESIGN_RETURN_IF_ERROR(CheckPrivate("events.webhook.secret_file", w.secret_file()));
  }
  if (c.health_check_interval_ms() < 100 || c.health_check_interval_ms() > 60000) {
    return FieldError("health_check_interval_ms", "must be 100 to 60000");
  }
  // The CRL (issue 11).
  const auto& crl = c.crl();
  if (crl.validity_seconds() < 3600 || crl.validity_seconds() > 31622400) {
    return FieldError("crl.validity_seconds", "must be 3600 (1 hour) to 31622400 (366 days)");
  }
  if (crl.refresh_before_seconds() < 60 || crl.refresh_before_seconds() > crl.validity_seconds() - 60) {
    return FieldError("crl.refresh_before_seconds",
                      absl::StrCat("must be 60 to crl.validity_seconds - 60 (", crl.validity_seconds() - 60, ")"));
  }
  if (crl.min_interval_ms() < 10 || crl.min_interval_ms() > 3600000) {
    return FieldError("crl.min_interval_ms", "must be 10 to 3600000");
  }
  if (crl.http_path() != "off") {
    const std::string& path = crl.http_path();
    if (path.size() < 2 || path.size() > 128 || path[0] != '/' ||
        !std::all_of(path.begin(), path.end(), [](char ch) {
          return absl::ascii_isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '.' || ch == '_' ||
                 ch == '/';
        }) ||
        absl::StrContains(path, "//") || absl::StrContains(path, "/../") || absl::EndsWith(path, "/..")) {
      return FieldError("crl.http_path",
                        "must be \"off\" or \"/\" followed by letters, digits and \"-._/\", at most 128 bytes");
    }
    for (const char* taken : {"/metrics", "/healthz", "/readyz", "/status", "/status.json"}) {
      if (path == taken) {
        return FieldError("crl.http_path", absl::StrCat("is ", taken, ", which the HTTP listener already serves"));
      }
    }
  }
  LINESIGN_RETURN_IF_ERROR(ValidateTls(c));
  LINESIGN_RETURN_IF_ERROR(ValidateAccess(c));
  LINESIGN_RETURN_IF_ERROR(ValidateHttp(c));
  LINESIGN_RETURN_IF_ERROR(iot::ValidateIotConfig(c));
  return absl::OkStatus();
}

absl::StatusOr<v1::ServerConfig> LoadConfigFile(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return absl::InvalidArgumentError(absl::StrCat("--config: ", text.status().message()));
  LINESIGN_ASSIGN_OR_RETURN(v1::ServerConfig config, ParseConfigYaml(*text));
  std::string base = ".";
  if (auto slash = path.rfind('/'); slash != std::string::npos) base = path.substr(0, slash);
  if (base.empty()) base = "/";
  auto* h = config.mutable_hsm();
  Resolve(base, h->mutable_pin_file());
  Resolve(base, h->mutable_development_key_file());
  Resolve(base, config.mutable_ca()->mutable_chain_file());
  if (config.has_store() && config.store().has_sqlite()) {
    Resolve(base, config.mutable_store()->mutable_sqlite()->mutable_path());
  }
  if (config.has_store() && config.store().has_postgres() && !config.store().postgres().password_file().empty()) {
    Resolve(base, config.mutable_store()->mutable_postgres()->mutable_password_file());
  }
  if (config.has_tls()) {
    auto* t = config.mutable_tls();
    Resolve(base, t->mutable_certificate_file());
    Resolve(base, t->mutable_key_file());
    Resolve(base, t->mutable_client_ca_file());
    for (auto& crl : *t->mutable_crl_files()) Resolve(base, &crl);
  }
  if (config.has_audit()) Resolve(base, config.mutable_audit()->mutable_file());
  ApplyDefaults(&config);
  LINESIGN_RETURN_IF_ERROR(Validate(config));
  return config;
}

namespace {
void SetBlock(YAML::Node node) {
  if (node.IsMap() || node.IsSequence()) {
    node.SetStyle(YAML::EmitterStyle::Block);
    if (node.IsMap()) {
      for (auto kv : node) SetBlock(kv.second);
    } else {
      for (auto child : node) SetBlock(child);
    }
  }
}
}  // namespace

std::string ToYaml(const v1::ServerConfig& config) {
  std::string json;
  google::protobuf::util::JsonPrintOptions print;
  print.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(config, &json, print);
  YAML::Node node;
  try {
    node = YAML::Load(json);
  } catch (const YAML::Exception&) {
    return json + "\n";  // JSON is YAML too; found by fuzz/config_fuzzer: yaml-cpp cannot read back every string
  }
  SetBlock(node);
  YAML::Emitter out;
  out << node;
  return std::string(out.c_str()) + "\n";
}

}  // namespace linesign::config
