#include "common/der.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace linesign::der {

void AppendTlv(std::string* out, uint8_t tag, absl::string_view content) {
  out->push_back(static_cast<char>(tag));
  size_t len = content.size();
  if (len < 0x80) {
    out->push_back(static_cast<char>(len));
  } else {
    int n = 0;
    for (size_t l = len; l > 0; l >>= 8) ++n;
    out->push_back(static_cast<char>(0x80 | n));
    for (int i = n - 1; i >= 0; --i) out->push_back(static_cast<char>((len >> (8 * i)) & 0xff));
  }
  out->append(content.data(), content.size());
}

std::string Tlv(uint8_t tag, absl::string_view content) {
  std::string out;
  out.reserve(content.size() + 6);
  AppendTlv(&out, tag, content);
  return out;
}

std::string Sequence(std::initializer_list<absl::string_view> parts) {
  size_t total = 0;
  for (auto p : parts) total += p.size();
  std::string content;
  content.reserve(total);
  for (auto p : parts) content.append(p.data(), p.size());
  return Tlv(kSequence, content);
}

std::string UnsignedInteger(absl::string_view bytes) {
  size_t i = 0;
  while (i + 1 < bytes.size() && bytes[i] == 0) ++i;
  std::string content;
  if (bytes.empty()) {
    content.push_back(0);
  } else {
    if (static_cast<uint8_t>(bytes[i]) & 0x80) content.push_back(0);
    content.append(bytes.data() + i, bytes.size() - i);
  }
  return Tlv(kInteger, content);
}

std::string SmallInteger(uint64_t value) {
  std::string bytes;
  for (int i = 7; i >= 0; --i) bytes.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
  return UnsignedInteger(bytes);
}

static void AppendBase128(std::string* out, uint64_t v) {
  char tmp[10];
  int n = 0;
  do {
    tmp[n++] = static_cast<char>(v & 0x7f);
    v >>= 7;
  } while (v != 0);
  for (int i = n - 1; i >= 0; --i) out->push_back(static_cast<char>(tmp[i] | (i > 0 ? 0x80 : 0)));
}

std::string Oid(absl::string_view dotted) {
  std::vector<uint64_t> arcs;
  for (absl::string_view part : absl::StrSplit(dotted, '.')) {
    uint64_t v;
    if (part.empty() || !absl::SimpleAtoi(part, &v)) return "";
    arcs.push_back(v);
  }
  if (arcs.size() < 2 || arcs[0] > 2 || (arcs[0] < 2 && arcs[1] >= 40)) return "";
  std::string content;
  AppendBase128(&content, arcs[0] * 40 + arcs[1]);
  for (size_t i = 2; i < arcs.size(); ++i) AppendBase128(&content, arcs[i]);
  return Tlv(kOid, content);
}

std::string Boolean(bool value) { return Tlv(kBoolean, std::string(1, value ? '\xff' : '\x00')); }

std::string OctetString(absl::string_view bytes) { return Tlv(kOctetString, bytes); }

std::string BitString(absl::string_view bytes) {
  std::string content(1, '\0');
  content.append(bytes.data(), bytes.size());
  return Tlv(kBitString, content);
}

std::string Time(absl::Time t) {
  absl::CivilSecond cs = absl::ToCivilSecond(t, absl::UTCTimeZone());
  if (cs.year() >= 1950 && cs.year() <= 2049) {
    return Tlv(kUtcTime, absl::FormatTime("%y%m%d%H%M%SZ", t, absl::UTCTimeZone()));
  }
  return Tlv(kGeneralizedTime, absl::FormatTime("%Y%m%d%H%M%SZ", t, absl::UTCTimeZone()));
}

bool Reader::Next(uint8_t* tag, absl::string_view* content, absl::string_view* whole) {
  if (!ok_ || data_.empty()) return false;
  const auto* p = reinterpret_cast<const uint8_t*>(data_.data());
  size_t n = data_.size();
  if (n < 2 || (p[0] & 0x1f) == 0x1f) {  // high-tag-number form is never used by what we read
    ok_ = false;
    return false;
  }
  size_t len, hdr;
  if (p[1] < 0x80) {
    len = p[1];
    hdr = 2;
  } else {
    size_t k = p[1] & 0x7f;
    // 0x80 is the indefinite form (BER only); more than 4 length octets is never legitimate here.
    if (k == 0 || k > 4 || n < 2 + k || p[2] == 0) {
      ok_ = false;
      return false;
    }
    len = 0;
    for (size_t i = 0; i < k; ++i) len = (len << 8) | p[2 + i];
    if (len < 0x80) {  // non-minimal length
      ok_ = false;
      return false;
    }
    hdr = 2 + k;
  }
  if (len > n - hdr) {
    ok_ = false;
    return false;
  }
  *tag = p[0];
  *content = data_.substr(hdr, len);
  if (whole != nullptr) *whole = data_.substr(0, hdr + len);
  data_.remove_prefix(hdr + len);
  return true;
}

bool Reader::Expect(uint8_t tag, absl::string_view* content, absl::string_view* whole) {
  uint8_t t;
  if (!Next(&t, content, whole)) return false;
  if (t != tag) {
    ok_ = false;
    return false;
  }
  return true;
}

}  // namespace linesign::der
