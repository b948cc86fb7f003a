#include "tests/testing/strict_parse.h"

#include <openssl/x509v3.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/openssl_util.h"
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

}  // namespace

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
