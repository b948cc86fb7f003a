#include "client/revocation_commands.h"

#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "client/output.h"
#include "common/openssl_util.h"
#include "common/utf8.h"
#include "linesign/v1/admin.grpc.pb.h"
#include "linesign/v1/ca.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace linesign::client {
namespace {

struct Reason {
  int code;
  const char* kebab;
  const char* rfc;
};
constexpr Reason kReasons[] = {
    {0, "unspecified", "unspecified"},
    {1, "key-compromise", "keyCompromise"},
    {2, "ca-compromise", "cACompromise"},
    {3, "affiliation-changed", "affiliationChanged"},
    {4, "superseded", "superseded"},
    {5, "cessation-of-operation", "cessationOfOperation"},
    {6, "certificate-hold", "certificateHold"},
    {8, "remove-from-crl", "removeFromCRL"},
    {9, "privilege-withdrawn", "privilegeWithdrawn"},
    {10, "aa-compromise", "aACompromise"},
};

std::string RfcName(int code) {
  for (const Reason& r : kReasons) {
    if (r.code == code) return r.rfc;
  }
  return absl::StrCat(code);
}

int Fail(const std::string& what) {
  std::cerr << "linesign: " << what << "\n";
  return 1;
}

int FailRpc(const std::string& rpc, const grpc::Status& st) {
  return Fail(rpc + " failed: " + StatusCodeName(st.error_code()) + ": " + st.error_message());
}

std::string FormatSeconds(int64_t seconds) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(seconds), absl::UTCTimeZone());
}

std::unique_ptr<grpc::ClientContext> Context(int timeout_s) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(timeout_s));
  return ctx;
}

// Entry is one CRL entry as printed.
struct Entry {
  std::string serial_hex;
  int64_t revoked_at = 0;
  std::string reason;  // "" when the entry carries no reasonCode (unspecified)
};

std::vector<Entry> Entries(const std::string& der) {
  std::vector<Entry> out;
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  OsslPtr<X509_CRL> crl(d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size())));
  if (crl == nullptr) return out;
  STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl.get());
  for (int i = 0; i < sk_X509_REVOKED_num(revoked); ++i) {
    X509_REVOKED* r = sk_X509_REVOKED_value(revoked, i);
    Entry e;
    OsslPtr<BIGNUM> bn(ASN1_INTEGER_to_BN(X509_REVOKED_get0_serialNumber(r), nullptr));
    char* hex = BN_bn2hex(bn.get());
    e.serial_hex = hex;
    OPENSSL_free(hex);
    struct tm tm = {};
    ASN1_TIME_to_tm(X509_REVOKED_get0_revocationDate(r), &tm);
    e.revoked_at = timegm(&tm);
    auto* reason = static_cast<ASN1_ENUMERATED*>(X509_REVOKED_get_ext_d2i(r, NID_crl_reason, nullptr, nullptr));
    if (reason != nullptr) {
      e.reason = RfcName(static_cast<int>(ASN1_ENUMERATED_get(reason)));
      ASN1_ENUMERATED_free(reason);
    }
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace

absl::StatusOr<int> ParseRevocationReason(const std::string& text) {
  int code = 0;
  if (absl::SimpleAtoi(text, &code)) return code;
  for (const Reason& r : kReasons) {
    if (text == r.kebab || text == r.rfc) return r.code;
  }
  std::vector<std::string> names;
  for (const Reason& r : kReasons) names.push_back(r.kebab);
  return absl::InvalidArgumentError(absl::StrCat("--reason '", text, "' is not a revocation reason; use one of ",
                                                 absl::StrJoin(names, ", "), " (or its RFC 5280 number)"));
}

RevocationCommands::RevocationCommands(CLI::App* app, const AddConnection& add_connection) {
  revoke_ = app->add_subcommand("revoke", "Administrators: revoke a certificate for good (it enters the next CRL)");
  add_connection(revoke_);
  revoke_->add_option("serial", serial_, "Serial, hexadecimal")->required();
  revoke_->add_option("--reason", reason_,
                      "unspecified, key-compromise, ca-compromise, affiliation-changed, superseded, "
                      "cessation-of-operation, privilege-withdrawn")
      ->capture_default_str();
  revoke_->add_flag("--json", json_, "Print the result as one JSON object");

  crl_ = app->add_subcommand("crl", "Fetch the CA's current CRL: a summary, or the CRL itself with -o / --pem");
  add_connection(crl_);
  crl_->add_option("-o,--out", out_, "Write the CRL to this file (DER, or PEM with --pem); - for standard output");
  crl_->add_flag("--pem", pem_, "PEM instead of DER (without -o: the PEM on standard output)");
  crl_->add_flag("--json", json_, "Print the summary and entries as one JSON object");

  export_ = app->add_subcommand(
      "export", "Administrators: write a certificate and its CA chain (PEM, or PKCS#7); never a private key");
  add_connection(export_);
  export_->add_option("serial", serial_, "Serial, hexadecimal")->required();
  export_->add_option("-o,--out", out_, "Where to write (default: standard output)");
  export_->add_flag("--pkcs7", pkcs7_, "One PKCS#7 (certs-only, PEM) holding the certificate and the chain");
}

bool RevocationCommands::chosen() const { return *revoke_ || *crl_ || *export_; }

int RevocationCommands::Run(const std::shared_ptr<grpc::Channel>& channel, int timeout_s) {
  if (*revoke_) return Revoke(channel, timeout_s);
  if (*crl_) return Crl(channel, timeout_s);
  return Export(channel, timeout_s);
}

int RevocationCommands::Revoke(const std::shared_ptr<grpc::Channel>& channel, int timeout_s) {
  auto reason = ParseRevocationReason(reason_);
  if (!reason.ok()) return Fail(std::string(reason.status().message()));
  v1::RevokeCertificateRequest req;
  req.set_serial_hex(serial_);
  req.set_reason(static_cast<v1::RevocationReason>(*reason));
  v1::RevokeCertificateResponse resp;
  auto ctx = Context(timeout_s);
  grpc::Status st = v1::Administration::NewStub(channel)->RevokeCertificate(ctx.get(), req, &resp);
  if (!st.ok()) return FailRpc("revoke", st);
  const std::string reason_name = RfcName(resp.reason());
  if (json_) {
    nlohmann::json j = {{"serial_hex", resp.serial_hex()},
                        {"reason", reason_name},
                        {"reason_code", static_cast<int>(resp.reason())},
                        {"revoked_at", FormatSeconds(resp.revoked_at().seconds())},
                        {"already_revoked", resp.already_revoked()}};
    std::cout << j.dump() << "\n";
    return 0;
  }
  std::cout << "serial:     " << resp.serial_hex() << "\n"
            << "status:     " << (resp.already_revoked() ? "already revoked (nothing changed)" : "revoked") << "\n"
            << "reason:     " << reason_name << "\n"
            << "revoked_at: " << FormatSeconds(resp.revoked_at().seconds()) << "\n";
  return 0;
}

int RevocationCommands::Crl(const std::shared_ptr<grpc::Channel>& channel, int timeout_s) {
  v1::GetCrlResponse resp;
  auto ctx = Context(timeout_s);
  grpc::Status st = v1::CertificateAuthority::NewStub(channel)->GetCrl(ctx.get(), {}, &resp);
  if (!st.ok()) return FailRpc("crl", st);
  const std::string data = pem_ ? PemEncode("X509 CRL", resp.crl_der()) : resp.crl_der();
  if (!out_.empty()) {
    if (auto ws = WriteOutput(out_, data); !ws.ok()) return Fail(std::string(ws.message()));
    if (out_ != "-") {
      std::cerr << "CRL number " << resp.crl_number() << " (" << Entries(resp.crl_der()).size() << " entries, next update "
                << FormatSeconds(resp.next_update().seconds()) << ") -> " << out_ << "\n";
    }
    return 0;
  }
  if (pem_) {
    std::cout << data;
    return 0;
  }
  std::vector<Entry> entries = Entries(resp.crl_der());
  if (json_) {
    nlohmann::json list = nlohmann::json::array();
    for (const Entry& e : entries) {
      list.push_back({{"serial_hex", e.serial_hex},
                      {"revoked_at", FormatSeconds(e.revoked_at)},
                      {"reason", e.reason.empty() ? "unspecified" : e.reason}});
    }
    nlohmann::json j = {{"crl_number", resp.crl_number()},
                        {"this_update", FormatSeconds(resp.this_update().seconds())},
                        {"next_update", FormatSeconds(resp.next_update().seconds())},
                        {"der_bytes", resp.crl_der().size()},
                        {"entries", list}};
    std::cout << j.dump() << "\n";
    return 0;
  }
  std::cout << "crl_number:  " << resp.crl_number() << "\n"
            << "this_update: " << FormatSeconds(resp.this_update().seconds()) << "\n"
            << "next_update: " << FormatSeconds(resp.next_update().seconds()) << "\n"
            << "entries:     " << entries.size() << " (" << resp.crl_der().size() << " bytes DER)\n";
  if (!entries.empty()) {
    std::cout << absl::StrFormat("%-42s %-20s %s\n", "SERIAL", "REVOKED_AT", "REASON");
    for (const Entry& e : entries) {
      std::cout << absl::StrFormat("%-42s %-20s %s\n", e.serial_hex, FormatSeconds(e.revoked_at),
                                   e.reason.empty() ? "unspecified" : e.reason);
    }
  }
  return 0;
}

int RevocationCommands::Export(const std::shared_ptr<grpc::Channel>& channel, int timeout_s) {
  v1::GetCertificateRequest req;
  req.set_serial_hex(serial_);
  v1::GetCertificateResponse cert;
  auto ctx = Context(timeout_s);
  grpc::Status st = v1::Administration::NewStub(channel)->GetCertificate(ctx.get(), req, &cert);
  if (!st.ok()) return FailRpc("export", st);
  v1::GetCaChainResponse chain;
  auto chain_ctx = Context(timeout_s);
  st = v1::CertificateAuthority::NewStub(channel)->GetCaChain(chain_ctx.get(), {}, &chain);
  if (!st.ok()) return FailRpc("export (ca chain)", st);
  std::string data = PemEncode("CERTIFICATE", cert.certificate_der()) + chain.chain_pem();
  if (pkcs7_) {
    auto certs = ParseCertificatesPem(data, "the certificate and chain");
    if (!certs.ok()) return Fail(std::string(certs.status().message()));
    OsslPtr<STACK_OF(X509)> stack(sk_X509_new_null());
    for (auto& c : *certs) sk_X509_push(stack.get(), c.release());
    std::unique_ptr<PKCS7, decltype(&PKCS7_free)> p7(PKCS7_new(), PKCS7_free);
    // certs-only ("degenerate") SignedData, as `openssl crl2pkcs7 -nocrl` writes it.
    if (p7 == nullptr || PKCS7_set_type(p7.get(), NID_pkcs7_signed) != 1 ||
        PKCS7_content_new(p7.get(), NID_pkcs7_data) != 1) {
      return Fail(absl::StrCat("cannot make the PKCS#7: ", OpenSslErrors()));
    }
    for (int i = 0; i < sk_X509_num(stack.get()); ++i) {
      if (PKCS7_add_certificate(p7.get(), sk_X509_value(stack.get(), i)) != 1) {
        return Fail(absl::StrCat("cannot make the PKCS#7: ", OpenSslErrors()));
      }
    }
    OsslPtr<BIO> bio(BIO_new(BIO_s_mem()));
    if (PEM_write_bio_PKCS7(bio.get(), p7.get()) != 1) {
      return Fail(absl::StrCat("cannot write the PKCS#7: ", OpenSslErrors()));
    }
    char* bytes = nullptr;
    long n = BIO_get_mem_data(bio.get(), &bytes);
    data.assign(bytes, n);
  }
  if (auto ws = WriteOutput(out_.empty() ? "-" : out_, data); !ws.ok()) return Fail(std::string(ws.message()));
  if (!out_.empty() && out_ != "-") {
    std::cerr << "exported " << cert.serial_hex() << " with its chain" << (pkcs7_ ? " (PKCS#7)" : "") << " -> "
              << out_ << "\n";
  }
  return 0;
}

}  // namespace linesign::client
