// libFuzzer target: the whole front of a signing request — DecodeCsr (DER or PEM), CheckCsr against a profile
// that allows every key type and SAN type, then the profile's value rules (patterns, lengths, SAN from CN).
// Anything may be refused; nothing may crash, leak or trip a sanitizer. Differentially: the fast decoder never
// accepts a CSR OpenSSL's reference path refuses, and when both accept they yield the same fields. And the
// certificate: a CSR the front accepts is issued by the real builder (an in-memory CA key), and the certificate,
// re-parsed by OpenSSL (d2i_X509) and walked name by name, must satisfy the strict value rules
// (csr/strict_rules.h) — the target traps when an accepted CSR yields a certificate a strict parser rejects.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <tuple>

#include <openssl/x509v3.h>

#include "hsm/software_signer.h"
#include "server/csr/csr.h"
#include "server/csr/strict_rules.h"
#include "server/issuance/certificate_builder.h"
#include "server/profile/profile.h"

namespace {

linesign::v1::Profile Permissive() {
  linesign::v1::Profile p;
  for (const char* k : {"ec-p256", "ec-p384", "ed25519", "rsa"}) p.add_key_types(k);
  p.set_rsa_min_bits(2048);
  p.set_rsa_max_bits(4096);
  for (const char* a : {"CN", "O", "OU", "C", "L", "ST", "serialNumber"}) p.add_subject_attributes(a);
  for (const char* s : {"dns", "ip", "uri", "email"}) p.add_san_types(s);
  (*p.mutable_subject_patterns())["CN"] = "[A-Za-z0-9 ._-]{1,64}";
  (*p.mutable_san_patterns())["dns"] = "[a-z0-9.-]+";
  p.set_max_subject_value_bytes(64);
  p.set_max_san_value_bytes(255);
  return p;
}

linesign::v1::Profile FromSubject() {
  linesign::v1::Profile p = Permissive();
  p.clear_san_types();
  p.clear_san_patterns();
  p.set_san_from_subject("dns");
  return p;
}

// Issuer is an in-memory CA: a self-signed P-256 certificate and its key as a software signer.
struct Issuer {
  linesign::issuance::IssuingCa ca;
  std::unique_ptr<linesign::hsm::SoftwareSigner> signer;
  std::unique_ptr<linesign::issuance::CertificateBuilder> builder;
};

Issuer* MakeIssuer(const linesign::v1::Profile& permissive, const linesign::v1::Profile& from_subject) {
  auto* out = new Issuer;
  linesign::OsslPtr<EVP_PKEY> key(EVP_EC_gen("P-256"));
  linesign::OsslPtr<X509> cert(X509_new());
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(cert.get()), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("Fuzz CA"), -1, -1, 0);
  X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get()));
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 86400L * 3650);
  X509_set_pubkey(cert.get(), key.get());
  X509_sign(cert.get(), key.get(), EVP_sha256());
  out->ca.certificate = std::move(cert);
  out->ca.not_after = absl::Now() + absl::Hours(24 * 3650);
  out->signer = *linesign::hsm::SoftwareSigner::FromKey(std::move(key), "fuzz");
  out->builder = *linesign::issuance::CertificateBuilder::Create(&out->ca, out->signer.get());
  return out;
}

// CheckIssued re-parses `der` with OpenSSL and applies the strict rules to what OpenSSL sees; false on any breach.
bool CheckIssued(const std::string& der) {
  using linesign::OsslPtr;
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  OsslPtr<X509> x(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (x == nullptr || p != reinterpret_cast<const unsigned char*>(der.data()) + der.size()) return false;
  const X509_NAME* subject = X509_get_subject_name(x.get());
  for (int i = 0; i < X509_NAME_entry_count(subject); ++i) {
    const X509_NAME_ENTRY* e = X509_NAME_get_entry(subject, i);
    std::string oid = linesign::ToDer(i2d_ASN1_OBJECT, static_cast<const ASN1_OBJECT*>(X509_NAME_ENTRY_get_object(e)));
    const ASN1_STRING* v = X509_NAME_ENTRY_get_data(e);
    if (!linesign::csr::CheckAttributeValue(oid, static_cast<uint8_t>(ASN1_STRING_type(v)),
                                            absl::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(v)),
                                                              ASN1_STRING_length(v)))
             .ok()) {
      return false;
    }
  }
  int crit = 0;
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x.get(), NID_subject_alt_name, &crit, nullptr));
  if (names == nullptr && crit != -1) return false;
  bool ok = true;
  for (int i = 0; names != nullptr && ok && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, i);
    const ASN1_STRING* s = gn->type == GEN_EMAIL ? gn->d.rfc822Name
                           : gn->type == GEN_DNS ? gn->d.dNSName
                           : gn->type == GEN_URI ? gn->d.uniformResourceIdentifier
                           : gn->type == GEN_IPADD ? gn->d.iPAddress
                                                   : nullptr;
    ok = s != nullptr && linesign::csr::CheckGeneralName(
                             static_cast<uint8_t>(0x80 | gn->type),
                             absl::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                               ASN1_STRING_length(s)),
                             false)
                             .ok();
  }
  GENERAL_NAMES_free(names);
  if (!ok) return false;
  std::string spki =
      linesign::ToDer(i2d_X509_PUBKEY, static_cast<const X509_PUBKEY*>(X509_get_X509_PUBKEY(x.get())));
  return linesign::csr::CheckPublicKey(spki).ok() && X509_get0_pubkey(x.get()) != nullptr;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const linesign::v1::Profile* permissive = new linesign::v1::Profile(Permissive());
  static const linesign::v1::Profile* from_subject = new linesign::v1::Profile(FromSubject());
  // The compiled profiles the front uses (validity 1 day: the CA's validity is what the fuzzer's CA has).
  static const auto* compiled = new std::shared_ptr<const linesign::profile::Profile>(
      *linesign::profile::Profile::Compile("fuzz", [] { auto p = Permissive(); p.set_validity_days(1); return p; }()));
  static const auto* compiled_cn = new std::shared_ptr<const linesign::profile::Profile>(*linesign::profile::Profile::Compile(
      "fuzz-cn", [] { auto p = FromSubject(); p.set_validity_days(1); return p; }()));
  static const Issuer* issuer = MakeIssuer(*permissive, *from_subject);

  std::string input(reinterpret_cast<const char*>(data), size);
  auto der = linesign::csr::DecodeCsr(input);
  if (!der.ok()) return 0;
  {
    auto fast = linesign::csr::CheckCsrFastOnly(*der, *permissive);
    if (fast.has_value()) {
      auto reference = linesign::csr::CheckCsrReference(*der, *permissive, "fuzz");
      if (!reference.ok()) abort();  // the fast path accepted what the reference refuses
      if (fast->subject_der != reference->subject_der || fast->spki_der != reference->spki_der ||
          fast->san_der != reference->san_der || fast->sans != reference->sans ||
          fast->subject_attributes != reference->subject_attributes || fast->key.type != reference->key.type ||
          fast->subject_text != reference->subject_text) {
        abort();
      }
    }
  }
  for (auto [profile, rules] : {std::pair{permissive, compiled}, std::pair{from_subject, compiled_cn}}) {
    auto checked = linesign::csr::CheckCsr(*der, *profile, "fuzz");
    if (!checked.ok()) {
      if (checked.status().message().empty()) abort();  // every refusal says why
      continue;
    }
    if (checked->subject_der.empty() || checked->spki_der.empty() || checked->der != *der) abort();
    if (auto st = (*rules)->CheckValues(checked->subject_attributes, checked->sans); !st.ok()) {
      if (st.message().empty()) abort();
      continue;
    }
    if (auto st = (*rules)->MakeSans(checked->subject_attributes, &checked->sans); !st.ok()) {
      if (st.message().empty()) abort();
      continue;
    }
    // Accepted by the front: the builder must issue it, and what it issues must pass the strict rules as
    // OpenSSL sees the certificate.
    auto issued = issuer->builder->Issue(linesign::csr::MakeIssuanceRequest(*std::move(checked), *rules, "fuzz", "r"),
                                         linesign::issuance::NewSerial(), absl::Now());
    if (!issued.ok() || !CheckIssued(issued->der)) abort();
  }
  return 0;
}
