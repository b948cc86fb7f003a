// The one rule set for what a station may put into a certificate: string types of subject attributes
// (RFC 5280 §4.1.2.4, X.520), SAN syntax (RFC 5280 §4.2.1.6), public-key encodings (RFC 5480, RFC 8032) and the
// shape of a CSR's attributes (RFC 2986 extensionRequest). Both CSR paths (csr/fast_csr.cc, CheckCsrReference)
// apply these to what they decoded, and the certificate builder applies them again to what it is about to sign,
// so a certificate linesign signs is valid for strict parsers whatever the path that let it through.
//
// Every function returns OK or InvalidArgument naming the attribute or SAN, the value (escaped, truncated) and the
// rule it breaks.
#ifndef LINESIGN_SERVER_CSR_STRICT_RULES_H_
#define LINESIGN_SERVER_CSR_STRICT_RULES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace linesign::csr {

// ASN.1 universal tags of the string types an attribute value may carry.
inline constexpr uint8_t kUtf8StringTag = 0x0c, kPrintableStringTag = 0x13, kTeletexStringTag = 0x14,
                         kIa5StringTag = 0x16, kVisibleStringTag = 0x1a, kUniversalStringTag = 0x1c,
                         kBmpStringTag = 0x1e;

// SubjectAttribute is one attribute of a subject, in order.
struct SubjectAttribute {
  std::string name;   // OpenSSL short name ("CN", "O", "serialNumber") or the dotted OID when unknown
  std::string value;  // the value as UTF-8 text
  bool operator==(const SubjectAttribute&) const = default;
};

// EscapeValue renders station-supplied bytes for a message: printable ASCII as is (quote and backslash escaped),
// every other octet as \xNN, cut after 64 octets with "...".
std::string EscapeValue(absl::string_view bytes);

// AttributeName names the attribute whose OID is `oid_der` (the whole OBJECT IDENTIFIER TLV): OpenSSL's short
// name for the attributes linesign knows, the dotted OID otherwise.
std::string AttributeName(absl::string_view oid_der);

// CheckAttributeValue checks one subject AttributeTypeAndValue: `oid_der` is the whole OID TLV, `tag` and `value`
// the value's tag and content.
//  - C (and jurisdictionC): PrintableString of exactly two upper-case letters (ISO 3166-1 alpha-2);
//  - serialNumber, dnQualifier: PrintableString;
//  - emailAddress, DC: IA5String (7-bit);
//  - every other known attribute (a DirectoryString): UTF8String (well-formed: no overlongs, no surrogates) or
//    PrintableString (A-Z a-z 0-9 space ' ( ) + , - . / : = ?). TeletexString, BMPString, UniversalString,
//    IA5String and VisibleString are refused: RFC 5280 has CAs write PrintableString or UTF8String only, and
//    converting would change what the device asked for.
//  - no value may be empty or hold a control character (U+0000..U+001F, U+007F): strict parsers and the humans
//    who read names in logs both choke on them, so refusing is the safe choice.
// An attribute linesign has no rule for is refused.
absl::Status CheckAttributeValue(absl::string_view oid_der, uint8_t tag, absl::string_view value);

// CheckName checks a whole subject Name (DER TLV): RDNs non-empty, every AttributeTypeAndValue as above.
absl::Status CheckName(absl::string_view name_der);

// CheckDnsName: a host name made of LDH labels (letters, digits, '-' not first or last) of 1 to 63 octets,
// at most 253 octets, no empty label, no trailing dot; "*." in front only when `allow_wildcard`.
// Case is left as it is.
absl::Status CheckDnsName(absl::string_view name, bool allow_wildcard);

// CheckGeneralName checks one SAN value by its GeneralName tag: 0x81 rfc822Name (local@domain, dot-atom local
// part of 7-bit printable characters, a DNS-name domain), 0x82 dNSName (CheckDnsName), 0x86 URI (RFC 3986
// absolute: a scheme, then only URI characters and well-formed %XX escapes), 0x87 iPAddress (4 or 16 octets).
// Any other type is refused.
absl::Status CheckGeneralName(uint8_t tag, absl::string_view value, bool allow_wildcard_dns);

// CheckGeneralNames checks a GeneralNames SEQUENCE (DER TLV): at least one name, each as above.
absl::Status CheckGeneralNames(absl::string_view general_names_der, bool allow_wildcard_dns);

// SanType is a subjectAltName's GeneralName type; the value is its context tag (RFC 5280 §4.2.1.6).
enum class SanType : uint8_t { kEmail = 0x81, kDns = 0x82, kUri = 0x86, kIp = 0x87 };

// San is one subjectAltName: its type and the GeneralName's content octets, byte for byte (an IP address is its
// 4 or 16 octets). This typed form is what travels from the CSR front to the certificate and the record: no
// layer parses a "DNS:x" text again.
struct San {
  SanType type;
  std::string value;
  bool operator==(const San&) const = default;
};

// SanTypeName returns the profile's name of `type`: "email", "dns", "uri" or "ip".
absl::string_view SanTypeName(SanType type);

// SanValueText returns `san`'s value as text: an IP address in OpenSSL's notation ("192.0.2.1",
// "2001:DB8:0:0:0:0:0:1"), every other value as it is.
std::string SanValueText(const San& san);

// GeneralNamesDer encodes `sans` as a GeneralNames SEQUENCE (DER TLV), in order.
std::string GeneralNamesDer(const std::vector<San>& sans);

// ParseSans takes apart a GeneralNames SEQUENCE into typed SANs. False when it is malformed or holds a type
// other than the four above (CheckGeneralNames says why).
bool ParseSans(absl::string_view general_names_der, std::vector<San>* out);

// CheckPublicKey checks a SubjectPublicKeyInfo (DER TLV) before any signature is verified with it:
//  - EC P-256/P-384: the uncompressed point form only (04 || x || y). Compressed points are refused rather than
//    re-encoded (the certificate carries exactly the key the CSR carried), hybrid points because RFC 5480
//    forbids them. Whether the point is on its curve is checked where it is decoded.
//  - Ed25519: 32 octets, canonical (y < p) and not one of the eight points of small order, for which a
//    signature that verifies for every message exists: such a key proves nothing.
//  - RSA: positive minimal INTEGERs, an exponent of at most 256 bits (2^256): a huge exponent makes every
//    verification slow and buys nothing.
// Any other algorithm is refused.
absl::Status CheckPublicKey(absl::string_view spki_der);

// RequestedExtensions is what a CSR's attributes ask for, as far as linesign takes anything from them.
struct RequestedExtensions {
  std::string san_der;  // the subjectAltName extension's value (GeneralNames DER), empty when none
};

// ParseRequestAttributes takes apart the content of a CertificationRequestInfo's attributes [0]:
//  - only the extensionRequest attribute (PKCS#9), at most once, with exactly one value, a SEQUENCE of
//    well-formed Extensions (critical written only as TRUE), no extension twice;
//  - subjectAltName is taken (its names are checked against the profile by the caller);
//  - basicConstraints is accepted when it asks for what every device certificate gets (CA:FALSE, no path
//    length); CA:TRUE is refused;
//  - any other extension, and any other attribute (challengePassword, ...), is refused by name: the
//    certificate's other extensions come from the profile, and nothing a CSR asks for is silently dropped.
// `profile_name` is for messages.
absl::StatusOr<RequestedExtensions> ParseRequestAttributes(absl::string_view attributes_content,
                                                           absl::string_view profile_name);

}  // namespace linesign::csr

#endif  // LINESIGN_SERVER_CSR_STRICT_RULES_H_
