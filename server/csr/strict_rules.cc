#include "server/csr/strict_rules.h"

#include <openssl/objects.h>

#include <algorithm>
#include <set>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/der.h"
#include "common/utf8.h"

namespace linesign::csr {
namespace {

using der::Reader;

absl::Status Refuse(absl::string_view msg) { return absl::InvalidArgumentError(msg); }

enum class Syntax { kDirectoryString, kPrintable, kCountry, kIa5 };

struct KnownAttribute {
  std::string oid_der;
  std::string name;
  Syntax syntax;
};

const std::vector<KnownAttribute>& Known() {
  static const auto* known = new std::vector<KnownAttribute>{
      {der::Oid("2.5.4.3"), "CN", Syntax::kDirectoryString},
      {der::Oid("2.5.4.10"), "O", Syntax::kDirectoryString},
      {der::Oid("2.5.4.11"), "OU", Syntax::kDirectoryString},
      {der::Oid("2.5.4.6"), "C", Syntax::kCountry},
      {der::Oid("2.5.4.7"), "L", Syntax::kDirectoryString},
      {der::Oid("2.5.4.8"), "ST", Syntax::kDirectoryString},
      {der::Oid("2.5.4.5"), "serialNumber", Syntax::kPrintable},
      {der::Oid("2.5.4.46"), "dnQualifier", Syntax::kPrintable},
      {der::Oid("2.5.4.4"), "SN", Syntax::kDirectoryString},
      {der::Oid("2.5.4.9"), "street", Syntax::kDirectoryString},
      {der::Oid("2.5.4.12"), "title", Syntax::kDirectoryString},
      {der::Oid("2.5.4.13"), "description", Syntax::kDirectoryString},
      {der::Oid("2.5.4.15"), "businessCategory", Syntax::kDirectoryString},
      {der::Oid("2.5.4.17"), "postalCode", Syntax::kDirectoryString},
      {der::Oid("2.5.4.41"), "name", Syntax::kDirectoryString},
      {der::Oid("2.5.4.42"), "GN", Syntax::kDirectoryString},
      {der::Oid("2.5.4.43"), "initials", Syntax::kDirectoryString},
      {der::Oid("2.5.4.44"), "generationQualifier", Syntax::kDirectoryString},
      {der::Oid("2.5.4.65"), "pseudonym", Syntax::kDirectoryString},
      {der::Oid("2.5.4.97"), "organizationIdentifier", Syntax::kDirectoryString},
      {der::Oid("0.9.2342.19200300.100.1.1"), "UID", Syntax::kDirectoryString},
      {der::Oid("0.9.2342.19200300.100.1.25"), "DC", Syntax::kIa5},
      {der::Oid("1.2.840.113549.1.9.1"), "emailAddress", Syntax::kIa5},
      {der::Oid("1.3.6.1.4.1.311.60.2.1.1"), "jurisdictionL", Syntax::kDirectoryString},
      {der::Oid("1.3.6.1.4.1.311.60.2.1.2"), "jurisdictionST", Syntax::kDirectoryString},
      {der::Oid("1.3.6.1.4.1.311.60.2.1.3"), "jurisdictionC", Syntax::kCountry},
  };
  return *known;
}

const KnownAttribute* FindAttribute(absl::string_view oid_der) {
  for (const auto& k : Known()) {
    if (k.oid_der == oid_der) return &k;
  }
  return nullptr;
}

// OidText names any OID TLV: OpenSSL's long name and the dotted form, or the dotted form alone.
std::string OidText(absl::string_view oid_der) {
  const auto* p = reinterpret_cast<const unsigned char*>(oid_der.data());
  ASN1_OBJECT* obj = d2i_ASN1_OBJECT(nullptr, &p, static_cast<long>(oid_der.size()));
  if (obj == nullptr) return "(malformed OID)";
  char dotted[128];
  OBJ_obj2txt(dotted, sizeof(dotted), obj, 1);
  int nid = OBJ_obj2nid(obj);
  ASN1_OBJECT_free(obj);
  if (nid == NID_undef) return dotted;
  return absl::StrCat(OBJ_nid2ln(nid), " (", dotted, ")");
}

std::string TagName(uint8_t tag) {
  switch (tag) {
    case kUtf8StringTag: return "UTF8String";
    case kPrintableStringTag: return "PrintableString";
    case kTeletexStringTag: return "TeletexString";
    case kIa5StringTag: return "IA5String";
    case kVisibleStringTag: return "VisibleString";
    case kUniversalStringTag: return "UniversalString";
    case kBmpStringTag: return "BMPString";
    default: return absl::StrFormat("a value of tag 0x%02X", tag);
  }
}

bool IsPrintableStringChar(unsigned char c) {
  return absl::ascii_isalnum(c) || c == ' ' || c == '\'' || c == '(' || c == ')' || c == '+' || c == ',' ||
         c == '-' || c == '.' || c == '/' || c == ':' || c == '=' || c == '?';
}

// FirstControl returns the offset of the first C0 control or DEL in a 7-bit or UTF-8 value (continuation bytes
// of UTF-8 are never below 0x80), or npos.
size_t FirstControl(absl::string_view v) {
  for (size_t i = 0; i < v.size(); ++i) {
    unsigned char c = v[i];
    if (c < 0x20 || c == 0x7f) return i;
  }
  return absl::string_view::npos;
}

// DnsProblem says what makes `s` no host name, or "".
std::string DnsProblem(absl::string_view s, bool allow_wildcard) {
  if (s.empty()) return "it is empty";
  if (s.size() > 253) return absl::StrCat("it is ", s.size(), " characters long, more than 253");
  if (s.size() >= 2 && s[0] == '*' && s[1] == '.') {
    if (!allow_wildcard) return "a wildcard ('*.') is not allowed (the profile's allow_wildcard_dns is off)";
    s.remove_prefix(2);
  }
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i < s.size() && s[i] != '.') {
      unsigned char c = s[i];
      if (!absl::ascii_isalnum(c) && c != '-') {
        return absl::StrFormat("it contains the character 0x%02X; only letters, digits, '-' and '.' are allowed", c);
      }
      continue;
    }
    absl::string_view label = s.substr(start, i - start);
    if (label.empty()) return i == s.size() && i > 0 ? "it ends with a dot" : "it has an empty label";
    if (label.size() > 63) return absl::StrCat("the label '", label.substr(0, 16), "...' is longer than 63");
    if (label.front() == '-' || label.back() == '-') {
      return absl::StrCat("the label '", label, "' starts or ends with '-'");
    }
    start = i + 1;
  }
  return "";
}

bool IsAtext(unsigned char c) {
  return absl::ascii_isalnum(c) || absl::string_view("!#$%&'*+-/=?^_`{|}~").find(c) != absl::string_view::npos;
}

std::string EmailProblem(absl::string_view s) {
  if (s.empty()) return "it is empty";
  size_t at = s.find('@');
  if (at == absl::string_view::npos || s.find('@', at + 1) != absl::string_view::npos) {
    return "it must be local@domain with exactly one '@'";
  }
  absl::string_view local = s.substr(0, at), domain = s.substr(at + 1);
  if (local.empty() || local.size() > 64) return "the local part must be 1 to 64 characters";
  if (local.front() == '.' || local.back() == '.' || local.find("..") != absl::string_view::npos) {
    return "the local part has an empty dot-separated part";
  }
  for (unsigned char c : local) {
    if (c != '.' && !IsAtext(c)) {
      return absl::StrFormat("the local part contains the character 0x%02X (7-bit, no spaces, quotes or controls)",
                             c);
    }
  }
  if (std::string p = DnsProblem(domain, false); !p.empty()) return absl::StrCat("the domain is invalid: ", p);
  return "";
}

std::string UriProblem(absl::string_view s) {
  size_t colon = s.find(':');
  if (colon == absl::string_view::npos || colon == 0 || !absl::ascii_isalpha(static_cast<unsigned char>(s[0]))) {
    return "it is not an absolute URI (RFC 3986: scheme ':' ...)";
  }
  for (unsigned char c : s.substr(0, colon)) {
    if (!absl::ascii_isalnum(c) && c != '+' && c != '-' && c != '.') return "its scheme is malformed";
  }
  if (colon + 1 == s.size()) return "it has nothing after the scheme";
  static constexpr absl::string_view kAllowed = "-._~:/?#[]@!$&'()*+,;=";
  int fragments = 0;
  for (size_t i = colon + 1; i < s.size(); ++i) {
    unsigned char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size() || !absl::ascii_isxdigit(static_cast<unsigned char>(s[i + 1])) ||
          !absl::ascii_isxdigit(static_cast<unsigned char>(s[i + 2]))) {
        return "it has a '%' not followed by two hex digits";
      }
      i += 2;
      continue;
    }
    if (c == '#' && ++fragments > 1) return "it has two '#'";
    if (!absl::ascii_isalnum(c) && kAllowed.find(c) == absl::string_view::npos) {
      return absl::StrFormat("it contains the character 0x%02X, which a URI must percent-encode", c);
    }
  }
  return "";
}

// Ed25519 points of small order, y with the sign bit cleared (little-endian; libsodium's list): a key whose y is
// one of these, with either sign, is refused.
const std::vector<std::string>& SmallOrderY() {
  static const auto* ys = [] {
    auto* v = new std::vector<std::string>;
    auto hex = [](absl::string_view h) {
      std::string out;
      for (size_t i = 0; i + 1 < h.size(); i += 2) out.push_back(static_cast<char>(std::stoi(std::string(h.substr(i, 2)), nullptr, 16)));
      return out;
    };
    v->push_back(std::string(32, '\0'));                                                         // y = 0, order 4
    v->push_back(std::string("\x01", 1) + std::string(31, '\0'));                                // y = 1, order 1
    v->push_back(std::string("\xec", 1) + std::string(30, '\xff') + std::string("\x7f", 1));     // y = -1, order 2
    v->push_back(hex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"));  // order 8
    v->push_back(hex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"));  // order 8
    return v;
  }();
  return *ys;
}

// IsCanonicalY: the 255-bit y of an Ed25519 encoding is below p = 2^255 - 19.
bool IsCanonicalY(absl::string_view key) {
  if ((static_cast<unsigned char>(key[31]) & 0x7f) != 0x7f) return true;
  for (int i = 30; i >= 1; --i) {
    if (static_cast<unsigned char>(key[i]) != 0xff) return true;
  }
  return static_cast<unsigned char>(key[0]) < 0xed;
}

bool IsMinimalPositiveInteger(absl::string_view v) {
  if (v.empty() || (static_cast<unsigned char>(v[0]) & 0x80)) return false;
  return !(v.size() > 1 && v[0] == 0 && !(static_cast<unsigned char>(v[1]) & 0x80));
}

int BitLength(absl::string_view magnitude) {
  size_t i = 0;
  while (i < magnitude.size() && magnitude[i] == 0) ++i;
  if (i == magnitude.size()) return 0;
  int bits = static_cast<int>(magnitude.size() - i - 1) * 8;
  for (unsigned char top = magnitude[i]; top != 0; top >>= 1) ++bits;
  return bits;
}

}  // namespace

std::string EscapeValue(absl::string_view bytes) {
  std::string out;
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (i == 64) {
      out += "...";
      break;
    }
    unsigned char c = bytes[i];
    if (c == '\'' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppendFormat(&out, "\\x%02X", c);
    }
  }
  return out;
}

std::string AttributeName(absl::string_view oid_der) {
  if (const KnownAttribute* k = FindAttribute(oid_der); k != nullptr) return k->name;
  return OidText(oid_der);
}

absl::Status CheckAttributeValue(absl::string_view oid_der, uint8_t tag, absl::string_view value) {
  const KnownAttribute* k = FindAttribute(oid_der);
  if (k == nullptr) {
    return Refuse(absl::StrCat("subject attribute ", OidText(oid_der), " has no string rules in linesign"));
  }
  auto bad = [&](absl::string_view rule) {
    return Refuse(absl::StrCat("subject attribute ", k->name, " (", TagName(tag), ") '", EscapeValue(value), "' ",
                               rule));
  };
  if (value.empty()) return bad("is empty");
  switch (k->syntax) {
    case Syntax::kCountry:
      if (tag != kPrintableStringTag || value.size() != 2 || !absl::ascii_isupper(static_cast<unsigned char>(value[0])) ||
          !absl::ascii_isupper(static_cast<unsigned char>(value[1]))) {
        return bad("is not a country code: it must be two upper-case letters (ISO 3166-1) in a PrintableString");
      }
      return absl::OkStatus();
    case Syntax::kPrintable:
      if (tag != kPrintableStringTag) return bad("must be a PrintableString (X.520)");
      break;
    case Syntax::kIa5:
      if (tag != kIa5StringTag) return bad("must be an IA5String");
      break;
    case Syntax::kDirectoryString:
      if (tag != kUtf8StringTag && tag != kPrintableStringTag) {
        return bad("must be a UTF8String or a PrintableString (RFC 5280 §4.1.2.4)");
      }
      break;
  }
  if (size_t at = FirstControl(value); at != absl::string_view::npos) {
    return bad(absl::StrFormat("holds the control character 0x%02X at offset %d; control characters are refused",
                               static_cast<unsigned char>(value[at]), at));
  }
  switch (tag) {
    case kPrintableStringTag:
      for (size_t i = 0; i < value.size(); ++i) {
        unsigned char c = value[i];
        if (!IsPrintableStringChar(c)) {
          return bad(absl::StrFormat("holds 0x%02X at offset %d, which a PrintableString may not (A-Z a-z 0-9 "
                                     "space ' ( ) + , - . / : = ? only)",
                                     c, i));
        }
      }
      break;
    case kIa5StringTag:
      for (size_t i = 0; i < value.size(); ++i) {
        if (static_cast<unsigned char>(value[i]) > 0x7f) {
          return bad(absl::StrFormat("holds 0x%02X at offset %d; an IA5String is 7-bit",
                                     static_cast<unsigned char>(value[i]), i));
        }
      }
      break;
    case kUtf8StringTag:
      if (!IsValidUtf8(value)) return bad("is not well-formed UTF-8 (RFC 3629)");
      break;
  }
  return absl::OkStatus();
}

absl::Status CheckName(absl::string_view name_der) {
  Reader outer(name_der);
  absl::string_view rdns;
  if (!outer.Expect(der::kSequence, &rdns) || !outer.empty()) return Refuse("subject Name is malformed");
  Reader r(rdns);
  while (!r.empty()) {
    absl::string_view set;
    if (!r.Expect(der::kSet, &set)) return Refuse("subject Name is malformed");
    if (set.empty()) return Refuse("subject has an empty RelativeDistinguishedName");
    Reader s(set);
    while (!s.empty()) {
      absl::string_view atv, oid_content, oid_whole, value;
      uint8_t tag;
      if (!s.Expect(der::kSequence, &atv)) return Refuse("subject Name is malformed");
      Reader a(atv);
      if (!a.Expect(der::kOid, &oid_content, &oid_whole) || !a.Next(&tag, &value) || !a.empty()) {
        return Refuse("subject Name has a malformed AttributeTypeAndValue");
      }
      if (auto st = CheckAttributeValue(oid_whole, tag, value); !st.ok()) return st;
    }
    if (!s.ok()) return Refuse("subject Name is malformed");
  }
  if (!r.ok()) return Refuse("subject Name is malformed");
  return absl::OkStatus();
}

absl::Status CheckDnsName(absl::string_view name, bool allow_wildcard) {
  if (std::string p = DnsProblem(name, allow_wildcard); !p.empty()) {
    return Refuse(absl::StrCat("'", EscapeValue(name), "' is not a valid DNS name: ", p));
  }
  return absl::OkStatus();
}

absl::Status CheckGeneralName(uint8_t tag, absl::string_view value, bool allow_wildcard_dns) {
  std::string type, problem;
  switch (tag) {
    case 0x81:
      type = "email", problem = EmailProblem(value);
      break;
    case 0x82:
      type = "dns", problem = DnsProblem(value, allow_wildcard_dns);
      break;
    case 0x86:
      type = "uri", problem = UriProblem(value);
      break;
    case 0x87:
      if (value.size() != 4 && value.size() != 16) {
        return Refuse(absl::StrCat("subjectAltName IP address must be 4 or 16 bytes, not ", value.size()));
      }
      return absl::OkStatus();
    default:
      return Refuse(absl::StrFormat("subjectAltName of GeneralName tag 0x%02X is not supported (dns, ip, uri, "
                                    "email only)",
                                    tag));
  }
  if (problem.empty()) return absl::OkStatus();
  return Refuse(absl::StrCat("subjectAltName ", type, " '", EscapeValue(value), "' is not a valid ",
                             type == "dns" ? "DNS name" : type == "uri" ? "URI" : "email address (rfc822Name)", ": ",
                             problem));
}

absl::Status CheckGeneralNames(absl::string_view general_names_der, bool allow_wildcard_dns) {
  Reader outer(general_names_der);
  absl::string_view names;
  if (!outer.Expect(der::kSequence, &names) || !outer.empty()) return Refuse("subjectAltName is malformed");
  if (names.empty()) return Refuse("CSR subjectAltName extension is empty");
  Reader r(names);
  uint8_t tag;
  absl::string_view value;
  while (r.Next(&tag, &value)) {
    if (auto st = CheckGeneralName(tag, value, allow_wildcard_dns); !st.ok()) return st;
  }
  if (!r.ok()) return Refuse("subjectAltName is malformed");
  return absl::OkStatus();
}

absl::string_view SanTypeName(SanType type) {
  switch (type) {
    case SanType::kEmail:
      return "email";
    case SanType::kDns:
      return "dns";
    case SanType::kUri:
      return "uri";
    case SanType::kIp:
      return "ip";
  }
  return "?";
}

std::string SanValueText(const San& san) {
  if (san.type != SanType::kIp) return san.value;
  const auto* b = reinterpret_cast<const unsigned char*>(san.value.data());
  if (san.value.size() == 4) return absl::StrFormat("%d.%d.%d.%d", b[0], b[1], b[2], b[3]);
  if (san.value.size() == 16) {
    std::string text;
    for (int i = 0; i < 16; i += 2) absl::StrAppendFormat(&text, "%s%X", i ? ":" : "", b[i] << 8 | b[i + 1]);
    return text;
  }
  return "<invalid>";  // what OpenSSL prints; CheckGeneralName refuses such an address
}

std::string GeneralNamesDer(const std::vector<San>& sans) {
  std::string names;
  for (const San& san : sans) der::AppendTlv(&names, static_cast<uint8_t>(san.type), san.value);
  return der::Tlv(der::kSequence, names);
}

bool ParseSans(absl::string_view general_names_der, std::vector<San>* out) {
  Reader outer(general_names_der);
  absl::string_view names;
  if (!outer.Expect(der::kSequence, &names) || !outer.empty()) return false;
  Reader r(names);
  while (!r.empty()) {
    uint8_t tag;
    absl::string_view v;
    if (!r.Next(&tag, &v)) return false;
    switch (tag) {
      case 0x81:
      case 0x82:
      case 0x86:
      case 0x87:
        out->push_back({static_cast<SanType>(tag), std::string(v)});
        break;
      default:
        return false;
    }
  }
  return true;
}

absl::Status CheckPublicKey(absl::string_view spki_der) {
  static const std::string kEc = der::Oid("1.2.840.10045.2.1"), kP256 = der::Oid("1.2.840.10045.3.1.7"),
                           kP384 = der::Oid("1.3.132.0.34"), kRsa = der::Oid("1.2.840.113549.1.1.1"),
                           kEd25519 = der::Oid("1.3.101.112");
  Reader outer(spki_der);
  absl::string_view spki, alg, bits, oid_content, oid, params;
  if (!outer.Expect(der::kSequence, &spki) || !outer.empty()) return Refuse("public key is malformed");
  Reader s(spki);
  if (!s.Expect(der::kSequence, &alg) || !s.Expect(der::kBitString, &bits) || !s.empty() || bits.empty() ||
      bits[0] != 0) {
    return Refuse("public key is malformed");
  }
  bits.remove_prefix(1);
  Reader a(alg);
  if (!a.Expect(der::kOid, &oid_content, &oid)) return Refuse("public key algorithm is malformed");
  if (!a.empty()) {
    uint8_t tag;
    absl::string_view c;
    if (!a.Next(&tag, &c, &params) || !a.empty()) return Refuse("public key algorithm is malformed");
  }
  if (oid == kEc) {
    size_t coordinate = params == kP256 ? 32 : params == kP384 ? 48 : 0;
    if (coordinate == 0 && !params.empty() && static_cast<unsigned char>(params[0]) == der::kSequence) {
      return Refuse("EC public key has explicit curve parameters; RFC 5480 allows only a named curve (P-256 or "
                    "P-384)");
    }
    if (coordinate == 0) return Refuse("EC public key is not on P-256 or P-384");
    unsigned char form = bits.empty() ? 0 : bits[0];
    if (form == 0x02 || form == 0x03) {
      return Refuse("EC public key is a compressed point; linesign requires the uncompressed form (04 || x || y)");
    }
    if (form == 0x06 || form == 0x07) {
      return Refuse("EC public key is a hybrid point, which RFC 5480 forbids; linesign requires the uncompressed "
                    "form (04 || x || y)");
    }
    if (form != 0x04 || bits.size() != 1 + 2 * coordinate) {
      return Refuse("EC public key is not an uncompressed point of its curve's size");
    }
    return absl::OkStatus();
  }
  if (oid == kEd25519) {
    if (!params.empty() || bits.size() != 32) return Refuse("Ed25519 public key must be 32 octets without parameters");
    if (!IsCanonicalY(bits)) {
      return Refuse("Ed25519 public key is not canonically encoded (y >= 2^255-19)");
    }
    std::string y(bits);
    y[31] = static_cast<char>(y[31] & 0x7f);
    for (const std::string& small : SmallOrderY()) {
      if (y == small) {
        return Refuse("Ed25519 public key is a point of small order: a signature by it proves no private key");
      }
    }
    return absl::OkStatus();
  }
  if (oid == kRsa) {
    if (params != absl::string_view("\x05\x00", 2)) return Refuse("RSA public key parameters must be NULL");
    Reader k(bits);
    absl::string_view pub, n, e;
    if (!k.Expect(der::kSequence, &pub) || !k.empty()) return Refuse("RSA public key is malformed");
    Reader f(pub);
    if (!f.Expect(der::kInteger, &n) || !f.Expect(der::kInteger, &e) || !f.empty() || !IsMinimalPositiveInteger(n) ||
        !IsMinimalPositiveInteger(e)) {
      return Refuse("RSA public key is malformed (modulus and exponent must be positive minimal INTEGERs)");
    }
    if (int e_bits = BitLength(e); e_bits > 256) {
      return Refuse(absl::StrCat("RSA public exponent of ", e_bits, " bits is too large (at most 2^256)"));
    }
    if (BitLength(e) < 2 || (static_cast<unsigned char>(e.back()) & 1) == 0) {
      return Refuse("RSA public exponent is not allowed (it must be odd and at least 3)");
    }
    return absl::OkStatus();
  }
  return Refuse(absl::StrCat("public key algorithm ", OidText(oid), " is not supported (P-256, P-384, Ed25519, RSA)"));
}

absl::StatusOr<RequestedExtensions> ParseRequestAttributes(absl::string_view attributes_content,
                                                           absl::string_view profile_name) {
  static const std::string kExtensionRequest = der::Oid("1.2.840.113549.1.9.14"), kSan = der::Oid("2.5.29.17"),
                           kBasicConstraints = der::Oid("2.5.29.19");
  RequestedExtensions out;
  Reader r(attributes_content);
  bool seen = false;
  while (!r.empty()) {
    absl::string_view attr, oid_content, oid, values;
    if (!r.Expect(der::kSequence, &attr)) return Refuse("CSR attributes are malformed");
    Reader a(attr);
    if (!a.Expect(der::kOid, &oid_content, &oid) || !a.Expect(der::kSet, &values) || !a.empty()) {
      return Refuse("CSR attributes are malformed");
    }
    if (oid != kExtensionRequest) {
      return Refuse(absl::StrCat("CSR attribute ", OidText(oid),
                                 " is not supported: linesign reads only the extensionRequest attribute"));
    }
    if (seen) return Refuse("CSR carries two extensionRequest attributes");
    seen = true;
    Reader v(values);
    absl::string_view exts;
    if (!v.Expect(der::kSequence, &exts) || !v.empty()) {
      return Refuse("CSR extensionRequest attribute is malformed: it must hold exactly one Extensions SEQUENCE");
    }
    Reader e(exts);
    std::set<std::string> ids;
    while (!e.empty()) {
      absl::string_view ext, id_content, id, value, c;
      uint8_t tag;
      if (!e.Expect(der::kSequence, &ext)) return Refuse("CSR extensionRequest attribute is malformed");
      Reader x(ext);
      if (!x.Expect(der::kOid, &id_content, &id) || !x.Next(&tag, &c)) {
        return Refuse("CSR extensionRequest attribute is malformed");
      }
      if (tag == der::kBoolean) {
        // DER writes the DEFAULT FALSE by leaving it out, and TRUE as 0xFF.
        if (c != absl::string_view("\xff", 1) || !x.Expect(der::kOctetString, &value)) {
          return Refuse(absl::StrCat("CSR extension ", OidText(id), " is malformed (critical must be DER TRUE)"));
        }
      } else if (tag == der::kOctetString) {
        value = c;
      } else {
        return Refuse(absl::StrCat("CSR extension ", OidText(id), " is malformed"));
      }
      if (!x.empty()) return Refuse(absl::StrCat("CSR extension ", OidText(id), " is malformed"));
      if (!ids.insert(std::string(id)).second) {
        return Refuse(absl::StrCat("CSR extensionRequest carries the extension ", OidText(id), " twice"));
      }
      if (id == kSan) {
        out.san_der = std::string(value);
      } else if (id == kBasicConstraints) {
        Reader b(value);
        absl::string_view bc;
        if (!b.Expect(der::kSequence, &bc) || !b.empty()) return Refuse("CSR basicConstraints extension is malformed");
        Reader f(bc);
        uint8_t t;
        absl::string_view field;
        if (f.Next(&t, &field)) {
          if (t == der::kBoolean && field == absl::string_view("\xff", 1)) {
            return Refuse("CSR asks for a CA certificate (basicConstraints CA:TRUE); devices get CA:FALSE");
          }
          if (t == der::kInteger) {
            return Refuse("CSR basicConstraints carries a pathLenConstraint, which only a CA certificate may have");
          }
          return Refuse("CSR basicConstraints extension is malformed");
        }
        if (!f.ok()) return Refuse("CSR basicConstraints extension is malformed");
      } else {
        return Refuse(absl::StrCat("CSR requests the extension ", OidText(id), ", which profile '", profile_name,
                                   "' does not take from a CSR (only subjectAltName, and basicConstraints CA:FALSE; "
                                   "the other extensions come from the profile)"));
      }
    }
    if (!e.ok()) return Refuse("CSR extensionRequest attribute is malformed");
  }
  if (!r.ok()) return Refuse("CSR attributes are malformed");
  return out;
}

}  // namespace linesign::csr
