#include "server/config/config.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <openssl/objects.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <regex>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/der.h"
#include "common/openssl_util.h"
#include "common/status_macros.h"
#include "hsm/pkcs11_uri.h"

namespace linesign::config {
namespace {

using google::protobuf::Value;

absl::Status YamlToValue(const YAML::Node& node, const std::string& path, Value* out) {
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
        LINESIGN_RETURN_IF_ERROR(YamlToValue(node[i], absl::StrCat(path, "[", i, "]"), list->add_values()));
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
        LINESIGN_RETURN_IF_ERROR(YamlToValue(kv.second, child, &(*fields)[key]));
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

void Resolve(const std::string& base, std::string* path) {
  if (!path->empty() && (*path)[0] != '/') *path = absl::StrCat(base, "/", *path);
}

}  // namespace

absl::StatusOr<v1::ServerConfig> ParseConfigYaml(const std::string& yaml) {
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
  }
  if (config->default_profile().empty() && config->profiles_size() == 1) {
    config->set_default_profile(config->profiles().begin()->first);
  }
  auto* s = config->mutable_signer();
  if (s->workers() == 0) s->set_workers(std::max(1u, std::thread::hardware_concurrency()));
  if (s->max_batch() == 0) s->set_max_batch(64);
  if (!s->has_max_linger_us()) s->set_max_linger_us(200);
  if (s->queue_size() == 0) s->set_queue_size(4096);
}

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

  if (!c.has_ca()) return FieldError("ca", "required");
  LINESIGN_RETURN_IF_ERROR(CheckReadable("ca.chain_file", c.ca().chain_file()));

  if (!c.has_store() || !c.store().has_sqlite()) return FieldError("store.sqlite", "required");
  if (c.store().sqlite().path().empty()) return FieldError("store.sqlite.path", "required");

  if (c.profiles().empty()) return FieldError("profiles", "at least one profile is required");
  static const std::regex kName("^[A-Za-z0-9_-]{1,64}$");
  for (const auto& [name, p] : c.profiles()) {
    std::string f = absl::StrCat("profiles.", name);
    if (!std::regex_match(name, kName)) return FieldError(f, "name must be 1-64 of [A-Za-z0-9_-]");
    if (p.validity_days() < 1 || p.validity_days() > 3650) {
      return FieldError(f + ".validity_days", "must be 1 to 3650");
    }
    if (p.backdate_seconds() > 86400) return FieldError(f + ".backdate_seconds", "must be 0 to 86400");
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
      int nid = OBJ_sn2nid(e.c_str());
      if (nid == NID_undef && der::Oid(e).empty()) {
        return FieldError(f + ".extended_key_usages", absl::StrCat("unknown usage '", e, "'"));
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
    for (const auto& s : p.san_types()) {
      if (!SanTypes().contains(s)) return FieldError(f + ".san_types", absl::StrCat("unknown '", s, "'"));
    }
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
  YAML::Node node = YAML::Load(json);
  SetBlock(node);
  YAML::Emitter out;
  out << node;
  return std::string(out.c_str()) + "\n";
}

}  // namespace linesign::config
