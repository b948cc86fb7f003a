#include "common/utf8.h"

#include <cstdint>

#include "absl/strings/str_format.h"

namespace linesign {
namespace {

// DecodeOne decodes the well-formed sequence at s[i] into `cp` and returns its length; 0 when the byte at s[i]
// does not start one.
size_t DecodeOne(absl::string_view s, size_t i, uint32_t* cp) {
  static const uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
  unsigned char c = s[i];
  int extra = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : -1;
  if (extra < 0 || i + extra >= s.size()) return 0;
  uint32_t v = c & (0x7f >> extra);
  for (int k = 1; k <= extra; ++k) {
    unsigned char cc = s[i + k];
    if ((cc & 0xc0) != 0x80) return 0;
    v = (v << 6) | (cc & 0x3f);
  }
  if (v < kMin[extra] || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
  *cp = v;
  return extra + 1;
}

void AppendByteEscape(unsigned char c, std::string* out) { absl::StrAppendFormat(out, "\\x%02X", c); }

}  // namespace

size_t FirstInvalidUtf8(absl::string_view s) {
  uint32_t cp;
  for (size_t i = 0; i < s.size();) {
    size_t n = DecodeOne(s, i, &cp);
    if (n == 0) return i;
    i += n;
  }
  return s.size();
}

bool IsValidUtf8(absl::string_view s) { return FirstInvalidUtf8(s) == s.size(); }

std::string ToValidUtf8(absl::string_view s) {
  if (IsValidUtf8(s)) return std::string(s);
  std::string out;
  out.reserve(s.size() + 16);
  uint32_t cp;
  for (size_t i = 0; i < s.size();) {
    size_t n = DecodeOne(s, i, &cp);
    if (n == 0) {
      AppendByteEscape(static_cast<unsigned char>(s[i]), &out);
      ++i;
    } else {
      out.append(s.data() + i, n);
      i += n;
    }
  }
  return out;
}

std::string QuoteForDisplay(absl::string_view s) {
  std::string out = "\"";
  out.reserve(s.size() + 2);
  uint32_t cp;
  for (size_t i = 0; i < s.size();) {
    size_t n = DecodeOne(s, i, &cp);
    if (n == 0) {
      AppendByteEscape(static_cast<unsigned char>(s[i]), &out);
      ++i;
      continue;
    }
    if (cp == '\\' || cp == '"') {
      out.push_back('\\');
      out.push_back(static_cast<char>(cp));
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (cp < 0x20 || cp == 0x7f) {
      AppendByteEscape(static_cast<unsigned char>(cp), &out);
    } else if ((cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 || cp == 0x200e || cp == 0x200f ||
               (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069) || cp == 0x061c) {
      absl::StrAppendFormat(&out, "\\u{%04X}", cp);
    } else {
      out.append(s.data() + i, n);
    }
    i += n;
  }
  out.push_back('"');
  return out;
}

std::string QuoteForDisplayUnlessPlain(absl::string_view s) {
  bool plain = !s.empty() && s.size() <= 64;
  for (char c : s) {
    plain = plain && ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == ' ' ||
                      c == '_' || c == '.' || c == '-');
  }
  return plain ? std::string(s) : QuoteForDisplay(s);
}

}  // namespace linesign
