// UTF-8 validation and escaping for text that arrives from outside (CSR subject values, SANs, request fields,
// configuration files). Station-controlled bytes go through ToValidUtf8 before they fill a protobuf `string`
// (which must be valid UTF-8) and through QuoteForDisplay before a person reads them.
#ifndef LINESIGN_COMMON_UTF8_H_
#define LINESIGN_COMMON_UTF8_H_

#include <string>

#include "absl/strings/string_view.h"

namespace linesign {

// IsValidUtf8: well-formed UTF-8 (RFC 3629): shortest forms only, no surrogates, at most U+10FFFF.
bool IsValidUtf8(absl::string_view s);

// FirstInvalidUtf8 returns the offset of the first byte that does not start a well-formed sequence, or s.size()
// when `s` is valid UTF-8.
size_t FirstInvalidUtf8(absl::string_view s);

// ToValidUtf8 returns `s` unchanged when it is valid UTF-8; otherwise a copy in which every byte that is not part
// of a well-formed sequence is written as the four characters \xHH (upper-case hex). Always valid UTF-8. Only
// for text that is normally valid: it does not escape backslashes, so use QuoteForDisplay where the reader must
// tell a literal "\xFF" from an escaped byte.
std::string ToValidUtf8(absl::string_view s);

// QuoteForDisplay renders `s` between double quotes so that it can never look like anything around it: `\` and
// `"` are written \\ and \", newline, carriage return and tab \n \r \t, other C0 controls, DEL and bytes that
// are not well-formed UTF-8 \xHH, and the code points that move or break a line or reorder text (C1 controls,
// U+2028, U+2029, bidirectional marks and overrides) \u{XXXX}. Everything else, non-ASCII letters included, is
// kept. The result is valid UTF-8, holds no control character, and maps different inputs to different outputs.
std::string QuoteForDisplay(absl::string_view s);

// QuoteForDisplayUnlessPlain returns `s` itself when it is 1 to 64 of [A-Za-z0-9 _.-] (a name the server made,
// such as a SAN type "IP Address"), else QuoteForDisplay(s).
std::string QuoteForDisplayUnlessPlain(absl::string_view s);

}  // namespace linesign

#endif  // LINESIGN_COMMON_UTF8_H_
