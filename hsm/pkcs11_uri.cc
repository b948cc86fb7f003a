#include "hsm/pkcs11_uri.h"

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace linesign::hsm {
namespace {

absl::StatusOr<std::string> PercentDecode(absl::string_view in, absl::string_view attr) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size() || !absl::ascii_isxdigit(in[i + 1]) || !absl::ascii_isxdigit(in[i + 2])) {
      return absl::InvalidArgumentError(absl::StrCat("PKCS#11 URI: bad percent-encoding in '", attr, "'"));
    }
    auto hex = [](char c) { return absl::ascii_isdigit(c) ? c - '0' : absl::ascii_tolower(c) - 'a' + 10; };
    out.push_back(static_cast<char>(hex(in[i + 1]) * 16 + hex(in[i + 2])));
    i += 2;
  }
  return out;
}

std::string PercentEncode(absl::string_view in) {
  std::string out;
  for (unsigned char c : in) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == ' ') {
      out.push_back(static_cast<char>(c));
    } else {
      static constexpr char kHex[] = "0123456789ABCDEF";
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

absl::Status Set(std::optional<std::string>* field, absl::string_view name, absl::string_view raw) {
  if (field->has_value()) return absl::InvalidArgumentError(absl::StrCat("PKCS#11 URI: '", name, "' given twice"));
  auto v = PercentDecode(raw, name);
  if (!v.ok()) return v.status();
  *field = *std::move(v);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Pkcs11Uri> ParsePkcs11Uri(absl::string_view uri) {
  absl::string_view rest = uri;
  if (!absl::ConsumePrefix(&rest, "pkcs11:")) {
    return absl::InvalidArgumentError("PKCS#11 URI must start with 'pkcs11:'");
  }
  absl::string_view path = rest, query;
  if (size_t q = rest.find('?'); q != absl::string_view::npos) {
    path = rest.substr(0, q);
    query = rest.substr(q + 1);
  }
  Pkcs11Uri out;
  for (absl::string_view attr : absl::StrSplit(path, ';', absl::SkipEmpty())) {
    auto eq = attr.find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("PKCS#11 URI: attribute '", attr, "' has no value"));
    }
    absl::string_view name = attr.substr(0, eq), value = attr.substr(eq + 1);
    absl::Status st;
    if (name == "token") {
      st = Set(&out.token, name, value);
    } else if (name == "manufacturer") {
      st = Set(&out.manufacturer, name, value);
    } else if (name == "serial") {
      st = Set(&out.serial, name, value);
    } else if (name == "model") {
      st = Set(&out.model, name, value);
    } else if (name == "object") {
      st = Set(&out.object, name, value);
    } else if (name == "id") {
      st = Set(&out.id, name, value);
    } else if (name == "type") {
      st = Set(&out.type, name, value);
      if (st.ok() && *out.type != "private" && *out.type != "public" && *out.type != "cert" &&
          *out.type != "secret-key" && *out.type != "data") {
        return absl::InvalidArgumentError(absl::StrCat("PKCS#11 URI: unknown type '", *out.type, "'"));
      }
    } else if (name == "slot-id") {
      unsigned long id;
      if (out.slot_id.has_value() || !absl::SimpleAtoi(value, &id)) {
        return absl::InvalidArgumentError("PKCS#11 URI: 'slot-id' must be given once, as a decimal number");
      }
      out.slot_id = id;
    } else if (name == "library-manufacturer" || name == "library-description" || name == "library-version" ||
               name == "slot-manufacturer" || name == "slot-description") {
      // Accepted and ignored: they select among modules, and linesign loads exactly one.
    } else {
      return absl::InvalidArgumentError(absl::StrCat("PKCS#11 URI: unknown attribute '", name, "'"));
    }
    if (!st.ok()) return st;
  }
  for (absl::string_view attr : absl::StrSplit(query, '&', absl::SkipEmpty())) {
    auto eq = attr.find('=');
    absl::string_view name = attr.substr(0, eq);
    absl::string_view value = eq == absl::string_view::npos ? "" : attr.substr(eq + 1);
    absl::Status st;
    if (name == "pin-value") {
      return absl::InvalidArgumentError(
          "PKCS#11 URI: pin-value is refused; give the PIN with hsm.pin_file or hsm.pin_env");
    } else if (name == "pin-source") {
      st = Set(&out.pin_source, name, value);
    } else if (name == "module-path") {
      st = Set(&out.module_path, name, value);
    } else if (name == "module-name") {
      // Module selection by name is left to hsm.module.
    } else {
      return absl::InvalidArgumentError(absl::StrCat("PKCS#11 URI: unknown query attribute '", name, "'"));
    }
    if (!st.ok()) return st;
  }
  if (!out.object.has_value() && !out.id.has_value()) {
    return absl::InvalidArgumentError("PKCS#11 URI: name the key with 'object=' or 'id='");
  }
  if (out.type.has_value() && *out.type != "private") {
    return absl::InvalidArgumentError("PKCS#11 URI: the CA key URI must have type=private (or no type)");
  }
  return out;
}

std::string Pkcs11Uri::ToString() const {
  std::string out = "pkcs11:";
  std::string sep;
  auto add = [&](absl::string_view name, const std::optional<std::string>& v) {
    if (!v.has_value()) return;
    absl::StrAppend(&out, sep, name, "=", PercentEncode(*v));
    sep = ";";
  };
  add("token", token);
  add("manufacturer", manufacturer);
  add("serial", serial);
  add("model", model);
  if (slot_id.has_value()) {
    absl::StrAppend(&out, sep, "slot-id=", *slot_id);
    sep = ";";
  }
  add("object", object);
  if (id.has_value()) {
    std::string enc;
    static constexpr char kHex[] = "0123456789ABCDEF";
    for (unsigned char c : *id) absl::StrAppend(&enc, "%", std::string(1, kHex[c >> 4]), std::string(1, kHex[c & 15]));
    absl::StrAppend(&out, sep, "id=", enc);
    sep = ";";
  }
  add("type", type);
  return out;
}

}  // namespace linesign::hsm
