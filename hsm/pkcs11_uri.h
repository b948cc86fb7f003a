// Pkcs11Uri: a parsed RFC 7512 PKCS#11 URI naming a token and a key on it.
#ifndef LINESIGN_HSM_PKCS11_URI_H_
#define LINESIGN_HSM_PKCS11_URI_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace linesign::hsm {

struct Pkcs11Uri {
  // Path attributes (percent-decoded). Unset ones match anything.
  std::optional<std::string> token;         // CKA token label
  std::optional<std::string> manufacturer;  // token manufacturerID
  std::optional<std::string> serial;        // token serialNumber
  std::optional<std::string> model;         // token model
  std::optional<std::string> object;        // CKA_LABEL
  std::optional<std::string> id;            // CKA_ID (raw bytes)
  std::optional<std::string> type;          // "private", "public", "cert", "secret-key", "data"
  std::optional<unsigned long> slot_id;     // slot-id
  // Query attributes.
  std::optional<std::string> pin_source;    // "file:/path" or a plain path
  std::optional<std::string> module_path;

  // ToString returns the URI in canonical form, for logs (it never holds a PIN).
  std::string ToString() const;
};

// ParsePkcs11Uri parses `uri` strictly: unknown path attributes, duplicates, bad percent-encoding and pin-value
// (a secret has no place in configuration) are InvalidArgument with a message naming the attribute.
absl::StatusOr<Pkcs11Uri> ParsePkcs11Uri(absl::string_view uri);

}  // namespace linesign::hsm

#endif  // LINESIGN_HSM_PKCS11_URI_H_
