// UTF-8 validation for text that arrives from outside (CSR subject values, configuration files).
#ifndef LINESIGN_COMMON_UTF8_H_
#define LINESIGN_COMMON_UTF8_H_

#include "absl/strings/string_view.h"

namespace linesign {

// IsValidUtf8: well-formed UTF-8 (RFC 3629): shortest forms only, no surrogates, at most U+10FFFF.
bool IsValidUtf8(absl::string_view s);

}  // namespace linesign

#endif  // LINESIGN_COMMON_UTF8_H_
