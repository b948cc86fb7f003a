// Minimal DER (X.690) writer and strict reader, enough to build TBSCertificates and to take apart the few
// structures linesign handles itself. Everything else is parsed by OpenSSL.
#ifndef LINESIGN_COMMON_DER_H_
#define LINESIGN_COMMON_DER_H_

#include <cstdint>
#include <initializer_list>
#include <string>

#include "absl/time/time.h"
#include "absl/strings/string_view.h"

namespace linesign::der {

inline constexpr uint8_t kBoolean = 0x01;
inline constexpr uint8_t kInteger = 0x02;
inline constexpr uint8_t kBitString = 0x03;
inline constexpr uint8_t kOctetString = 0x04;
inline constexpr uint8_t kNull = 0x05;
inline constexpr uint8_t kOid = 0x06;
inline constexpr uint8_t kUtcTime = 0x17;
inline constexpr uint8_t kGeneralizedTime = 0x18;
inline constexpr uint8_t kSequence = 0x30;
inline constexpr uint8_t kSet = 0x31;
// Context-specific tags used by certificates.
inline constexpr uint8_t kContext0Constructed = 0xa0;
inline constexpr uint8_t kContext3Constructed = 0xa3;
inline constexpr uint8_t kContext0Primitive = 0x80;

// Tlv returns tag || definite minimal length || content.
std::string Tlv(uint8_t tag, absl::string_view content);
// AppendTlv appends Tlv(tag, content) to `out`.
void AppendTlv(std::string* out, uint8_t tag, absl::string_view content);
// Sequence returns a SEQUENCE of the already-encoded `parts`.
std::string Sequence(std::initializer_list<absl::string_view> parts);
// UnsignedInteger encodes big-endian magnitude `bytes` as a non-negative INTEGER (leading zeros stripped,
// a 0x00 added when the top bit is set).
std::string UnsignedInteger(absl::string_view bytes);
// SmallInteger encodes a non-negative integer.
std::string SmallInteger(uint64_t value);
// Oid encodes a dotted OID ("2.5.29.19"). Returns "" for a malformed one.
std::string Oid(absl::string_view dotted);
std::string Boolean(bool value);
std::string OctetString(absl::string_view bytes);
// BitString encodes `bytes` with zero unused bits.
std::string BitString(absl::string_view bytes);
// Time encodes UTCTime for 1950..2049 and GeneralizedTime otherwise (RFC 5280 §4.1.2.5), whole seconds, "Z".
std::string Time(absl::Time t);

// Reader reads DER strictly: definite minimal lengths only, no reading past the end.
class Reader {
 public:
  explicit Reader(absl::string_view data) : data_(data) {}
  // Next reads one TLV. Returns false at the end or on malformed input (then ok() is false).
  bool Next(uint8_t* tag, absl::string_view* content, absl::string_view* whole = nullptr);
  // Expect reads one TLV that must have `tag`.
  bool Expect(uint8_t tag, absl::string_view* content, absl::string_view* whole = nullptr);
  bool empty() const { return data_.empty(); }
  bool ok() const { return ok_; }

 private:
  absl::string_view data_;
  bool ok_ = true;
};

}  // namespace linesign::der

#endif  // LINESIGN_COMMON_DER_H_
