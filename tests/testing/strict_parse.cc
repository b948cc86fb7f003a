#include "tests/testing/strict_parse.h"

#include <openssl/x509v3.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/openssl_util.h"
#include "common/status_macros.h"
#include "server/csr/strict_rules.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_ca.h"

namespace linesign::testing {
namespace {

// The python3-cryptography leg: every argument is a DER file; prints the first failure and exits 1.
constexpr char kPythonScript[] = R"PY(
import sys
from cryptography import x509
for path in sys.argv[1:]:
    try:
        c = x509.load_der_x509_certificate(open(path, 'rb').read())
        for name in (c.subject, c.issuer):
            for attribute in name:
                attribute.oid, attribute.value
            name.rfc4514_string()
        for extension in c.extensions:
            extension.oid, extension.critical, extension.value
        c.public_key()
        c.serial_number, c.not_valid_before, c.not_valid_after, c.signature_hash_algorithm
    except Exception as e:
        print('%s: %s: %s' % (path, type(e).__name__, e))
        sys.exit(1)
)PY";

// The python3-cryptography leg for one DER CRL.
constexpr char kPythonCrlScript[] = R"PY(
import sys
from cryptography import x509
try:
    c = x509.load_der_x509_crl(open(sys.argv[1], 'rb').read())
    for attribute in c.issuer:
        attribute.oid, attribute.value
    c.issuer.rfc4514_string()
    c.last_update, c.next_update, c.signature_hash_algorithm
    for extension in c.extensions:
        extension.oid, extension.critical, extension.value
    n = 0
    for r in c:
        r.serial_number, r.revocation_date
        for extension in r.extensions:
            extension.oid, extension.critical, extension.value
        n += 1
    print('entries', n)
except Exception as e:
    print('%s: %s' % (type(e).__name__, e))
    sys.exit(1)
)PY";

absl::Status Fail(absl::string_view parser, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(parser, " refuses the certificate: ", what));
}

absl::Status OpensslLeg(const std::string& der, bool allow_wildcard_dns) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  OsslPtr<X509> x(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (x == nullptr) return Fail("OpenSSL", absl::StrCat("d2i_X509: ", OpenSslErrors()));
  if (p != reinterpret_cast<const unsigned char*>(der.data()) + der.size()) return Fail("OpenSSL", "trailing bytes");
  if (ToDer(i2d_X509, static_cast<const X509*>(x.get())) != der) return Fail("OpenSSL", "re-encoding differs");
  X509_check_purpose(x.get(), -1, 0);
  if ((X509_get_extension_flags(x.get()) & EXFLAG_INVALID) != 0) return Fail("OpenSSL", "X509v3 cache: invalid");

  const X509_NAME* subject = X509_get_subject_name(x.get());
  for (int i = 0; i < X509_NAME_entry_count(subject); ++i) {
    const X509_NAME_ENTRY* e = X509_NAME_get_entry(subject, i);
    std::string oid = ToDer(i2d_ASN1_OBJECT, static_cast<const ASN1_OBJECT*>(X509_NAME_ENTRY_get_object(e)));
    const ASN1_STRING* v = X509_NAME_ENTRY_get_data(e);
    // V_ASN1_UTF8STRING, V_ASN1_PRINTABLESTRING, ... are the universal tag numbers.
    auto st = csr::CheckAttributeValue(
        oid, static_cast<uint8_t>(ASN1_STRING_type(v)),
        absl::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(v)), ASN1_STRING_length(v)));
    if (!st.ok()) return Fail("OpenSSL (RFC 5280 value rules)", st.message());
  }
  for (int i = 0; i < X509_get_ext_count(x.get()); ++i) {
    X509_EXTENSION* ext = X509_get_ext(x.get(), i);
    const X509V3_EXT_METHOD* method = X509V3_EXT_get(ext);
    if (method == nullptr) continue;  // an extension OpenSSL does not know: nothing to decode
    void* value = X509V3_EXT_d2i(ext);
    if (value == nullptr) {
      return Fail("OpenSSL", absl::StrCat("extension ", OBJ_nid2sn(OBJ_obj2nid(X509_EXTENSION_get_object(ext))),
                                          " does not decode"));
    }
    ASN1_item_free(static_cast<ASN1_VALUE*>(value), ASN1_ITEM_ptr(method->it));
  }
  int crit = 0;
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x.get(), NID_subject_alt_name, &crit, nullptr));
  if (names == nullptr && crit != -1) return Fail("OpenSSL", "subjectAltName does not decode");
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, i);
    const ASN1_STRING* s = nullptr;
    switch (gn->type) {
      case GEN_EMAIL: s = gn->d.rfc822Name; break;
      case GEN_DNS: s = gn->d.dNSName; break;
      case GEN_URI: s = gn->d.uniformResourceIdentifier; break;
      case GEN_IPADD: s = gn->d.iPAddress; break;
      default: break;
    }
    absl::Status st = s == nullptr ? absl::InvalidArgumentError(absl::StrCat("GeneralName type ", gn->type))
                                   : csr::CheckGeneralName(static_cast<uint8_t>(0x80 | gn->type),
                                                           absl::string_view(reinterpret_cast<const char*>(
                                                                                 ASN1_STRING_get0_data(s)),
                                                                             ASN1_STRING_length(s)),
                                                           allow_wildcard_dns);
    if (!st.ok()) {
      GENERAL_NAMES_free(names);
      return Fail("OpenSSL (RFC 5280 SAN rules)", st.message());
    }
  }
  GENERAL_NAMES_free(names);
  std::string spki = ToDer(i2d_X509_PUBKEY, static_cast<const X509_PUBKEY*>(X509_get_X509_PUBKEY(x.get())));
  if (auto st = csr::CheckPublicKey(spki); !st.ok()) return Fail("OpenSSL (key encoding rules)", st.message());
  if (X509_get0_pubkey(x.get()) == nullptr) return Fail("OpenSSL", "the public key does not decode");
  return absl::OkStatus();
}

absl::Status CrlFail(absl::string_view parser, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(parser, " refuses the CRL: ", what));
}

absl::Status DecodeExtension(X509_EXTENSION* ext) {
  const X509V3_EXT_METHOD* method = X509V3_EXT_get(ext);
  if (method == nullptr) return absl::OkStatus();
  void* value = X509V3_EXT_d2i(ext);
  if (value == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("extension ", OBJ_nid2sn(OBJ_obj2nid(X509_EXTENSION_get_object(ext))), " does not decode"));
  }
  ASN1_item_free(static_cast<ASN1_VALUE*>(value), ASN1_ITEM_ptr(method->it));
  return absl::OkStatus();
}

// RfcTime: UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 §5.1.2.4, §5.1.2.6).
bool RfcTime(const ASN1_TIME* t) {
  struct tm tm = {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return false;
  const bool utc = ASN1_STRING_type(t) == V_ASN1_UTCTIME;
  return utc == (tm.tm_year + 1900 < 2050);
}

absl::Status OpensslCrlLeg(const std::string& der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  OsslPtr<X509_CRL> crl(d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size())));
  if (crl == nullptr) return CrlFail("OpenSSL", absl::StrCat("d2i_X509_CRL: ", OpenSslErrors()));
  if (p != reinterpret_cast<const unsigned char*>(der.data()) + der.size()) return CrlFail("OpenSSL", "trailing bytes");
  if (ToDer(i2d_X509_CRL, static_cast<const X509_CRL*>(crl.get())) != der) {
    return CrlFail("OpenSSL", "re-encoding differs");
  }
  if (X509_CRL_get_version(crl.get()) != X509_CRL_VERSION_2) return CrlFail("OpenSSL", "not a v2 CRL");
  if (!RfcTime(X509_CRL_get0_lastUpdate(crl.get())) || !RfcTime(X509_CRL_get0_nextUpdate(crl.get()))) {
    return CrlFail("OpenSSL", "thisUpdate or nextUpdate missing or not in RFC 5280's time form");
  }
  const STACK_OF(X509_EXTENSION)* exts = X509_CRL_get0_extensions(crl.get());
  for (int i = 0; i < sk_X509_EXTENSION_num(exts); ++i) {
    if (auto st = DecodeExtension(sk_X509_EXTENSION_value(exts, i)); !st.ok()) return CrlFail("OpenSSL", st.message());
  }
  STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl.get());
  for (int i = 0; i < sk_X509_REVOKED_num(revoked); ++i) {
    X509_REVOKED* r = sk_X509_REVOKED_value(revoked, i);
    if (!RfcTime(X509_REVOKED_get0_revocationDate(r))) return CrlFail("OpenSSL", "an entry's revocationDate");
    const STACK_OF(X509_EXTENSION)* entry_exts = X509_REVOKED_get0_extensions(r);
    for (int j = 0; j < sk_X509_EXTENSION_num(entry_exts); ++j) {
      if (auto st = DecodeExtension(sk_X509_EXTENSION_value(entry_exts, j)); !st.ok()) {
        return CrlFail("OpenSSL", st.message());
      }
    }
    int crit = 0;
    auto* reason = static_cast<ASN1_ENUMERATED*>(X509_REVOKED_get_ext_d2i(r, NID_crl_reason, &crit, nullptr));
    if (reason != nullptr) {
      long code = ASN1_ENUMERATED_get(reason);
      ASN1_ENUMERATED_free(reason);
      if (code == 0) return CrlFail("OpenSSL", "an entry carries reasonCode unspecified (RFC 5280 §5.3.1: omit it)");
    } else if (crit != -1) {
      return CrlFail("OpenSSL", "an entry's reasonCode does not decode");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status StrictParseCrl(const std::string& der) {
  LINESIGN_RETURN_IF_ERROR(OpensslCrlLeg(der));
  std::string dir = TempDir("linesign-strict-crl");
  absl::Status out = absl::OkStatus();
  if (!WriteFile(dir + "/crl.der", der).ok() || !WriteFile(dir + "/crl.pem", PemEncode("X509 CRL", der)).ok()) {
    return absl::InternalError("cannot write the CRL files");
  }
  ExitResult py = RunCommand({"/usr/bin/python3", "-c", kPythonCrlScript, dir + "/crl.der"}, 300);
  if (py.exit_code != 0) out = CrlFail("python3-cryptography", py.output);
  if (out.ok()) {
    ExitResult gnutls = RunCommand({"/usr/bin/certtool", "--crl-info", "--infile", dir + "/crl.pem"}, 300);
    if (gnutls.exit_code != 0 || gnutls.output.find("X.509 Certificate Revocation List Information") ==
                                     std::string::npos) {
      out = CrlFail("GnuTLS certtool --crl-info", gnutls.output.substr(0, 2000));
    }
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return out;
}

absl::Status StrictParse(const std::string& der, bool allow_wildcard_dns) {
  return StrictParseAll({der}, allow_wildcard_dns);
}

absl::Status StrictParseAll(const std::vector<std::string>& ders, bool allow_wildcard_dns) {
  if (ders.empty()) return absl::OkStatus();
  for (size_t i = 0; i < ders.size(); ++i) {
    if (auto st = OpensslLeg(ders[i], allow_wildcard_dns); !st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("certificate ", i, ": ", st.message()));
    }
  }
  std::string dir = TempDir("linesign-strict");
  std::vector<std::string> python = {"/usr/bin/python3", "-c", kPythonScript};
  std::string pem;
  for (size_t i = 0; i < ders.size(); ++i) {
    std::string path = absl::StrCat(dir, "/", i, ".der");
    if (!WriteFile(path, ders[i]).ok()) return absl::InternalError(absl::StrCat("cannot write ", path));
    python.push_back(path);
    pem += PemEncode("CERTIFICATE", ders[i]);
  }
  absl::Status out = absl::OkStatus();
  ExitResult py = RunCommand(python, 300);
  if (py.exit_code != 0) out = Fail("python3-cryptography", py.output);
  if (out.ok()) {
    if (!WriteFile(dir + "/all.pem", pem).ok()) return absl::InternalError("cannot write all.pem");
    ExitResult gnutls = RunCommand({"/usr/bin/certtool", "-i", "--infile", dir + "/all.pem"}, 300);
    size_t parsed = 0;
    for (size_t at = 0; (at = gnutls.output.find("X.509 Certificate Information", at)) != std::string::npos; ++at) {
      ++parsed;
    }
    if (gnutls.exit_code != 0 || parsed != ders.size()) {
      out = Fail("GnuTLS certtool -i", absl::StrCat(parsed, " of ", ders.size(), " parsed: ",
                                                    gnutls.output.substr(gnutls.output.size() > 2000
                                                                             ? gnutls.output.size() - 2000
                                                                             : 0)));
    }
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return out;
}

}  // namespace linesign::testing
