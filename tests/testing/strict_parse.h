// StrictParse: the check every certificate a test receives goes through — is it valid for strict parsers?
#ifndef LINESIGN_TESTS_TESTING_STRICT_PARSE_H_
#define LINESIGN_TESTS_TESTING_STRICT_PARSE_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace linesign::testing {

// StrictParse returns OK when three independent parsers accept the DER certificate `der`, or an error naming
// the parser and what it said:
//  - OpenSSL: d2i_X509 with nothing left over, re-encoding gives the same bytes, the X509v3 cache is not
//    flagged invalid, every extension decodes, and every subject value (string tag and bytes as OpenSSL decoded
//    them) and every SAN satisfies the RFC 5280 value rules of server/csr/strict_rules.h, applied to OpenSSL's
//    view rather than to linesign's own DER walk; the public key's encoding likewise;
//  - python3-cryptography (Debian's, /usr/bin/python3): load_der_x509_certificate, every subject attribute's
//    value, every extension's value, the public key;
//  - GnuTLS: certtool -i.
// `allow_wildcard_dns` is the profile's setting the certificate was issued under.
absl::Status StrictParse(const std::string& der, bool allow_wildcard_dns = false);

// StrictParseAll does the same for many certificates with one python3 and one certtool process.
absl::Status StrictParseAll(const std::vector<std::string>& ders, bool allow_wildcard_dns = false);

// StrictParseCrl returns OK when three independent parsers accept the DER CRL `der`, or an error naming the
// parser and what it said:
//  - OpenSSL: d2i_X509_CRL with nothing left over, re-encoding gives the same bytes, version 2, every CRL and
//    entry extension decodes, no entry carries reasonCode unspecified (RFC 5280 §5.3.1), thisUpdate and
//    nextUpdate in RFC 5280's time forms (UTCTime through 2049);
//  - python3-cryptography: load_der_x509_crl, the issuer, every extension, every entry's serial, date and
//    extensions;
//  - GnuTLS: certtool --crl-info.
absl::Status StrictParseCrl(const std::string& der);

}  // namespace linesign::testing

#endif  // LINESIGN_TESTS_TESTING_STRICT_PARSE_H_
