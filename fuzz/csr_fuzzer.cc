// libFuzzer target: the whole front of a signing request — DecodeCsr (DER or PEM), CheckCsr against a profile
// that allows every key type and SAN type, then the profile's value rules (patterns, lengths, SAN from CN).
// Anything may be refused; nothing may crash, leak or trip a sanitizer. Differentially: the fast decoder never
// accepts a CSR OpenSSL's reference path refuses, and when both accept they yield the same fields.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "server/csr/csr.h"
#include "server/policy/profile_policy.h"

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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const linesign::v1::Profile* permissive = new linesign::v1::Profile(Permissive());
  static const linesign::v1::Profile* from_subject = new linesign::v1::Profile(FromSubject());
  static const auto* policy = linesign::policy::ProfilePolicy::Create("fuzz", *permissive)->release();
  static const auto* policy_cn = linesign::policy::ProfilePolicy::Create("fuzz-cn", *from_subject)->release();

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
  for (auto [profile, rules] : {std::pair{permissive, policy}, std::pair{from_subject, policy_cn}}) {
    auto checked = linesign::csr::CheckCsr(*der, *profile, "fuzz");
    if (!checked.ok()) {
      if (checked.status().message().empty()) abort();  // every refusal says why
      continue;
    }
    if (checked->subject_der.empty() || checked->spki_der.empty() || checked->der != *der) abort();
    if (auto st = rules->Apply(&*checked); !st.ok() && st.message().empty()) abort();
  }
  return 0;
}
