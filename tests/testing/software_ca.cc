#include "tests/testing/software_ca.h"

#include <openssl/x509v3.h>

#include "client/keygen.h"
#include "tests/testing/test_ca.h"

namespace linesign::testing {

std::unique_ptr<SoftwareCa> SoftwareCa::Create(const std::string& algorithm) {
  auto out = std::make_unique<SoftwareCa>();
  out->dir = TempDir("swca");
  auto key = client::GenerateKey(algorithm);
  if (!key.ok()) return nullptr;
  OsslPtr<X509> cert(X509_new());
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 4242);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("Unit Test CA"), -1,
                             -1, 0);
  X509_set_issuer_name(cert.get(), name);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 10L * 365 * 86400);
  X509_set_pubkey(cert.get(), key->get());
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
  for (auto [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                            std::pair{NID_key_usage, "critical,keyCertSign,cRLSign"},
                            std::pair{NID_subject_key_identifier, "hash"}}) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    X509_add_ext(cert.get(), ext, -1);
    X509_EXTENSION_free(ext);
  }
  X509_sign(cert.get(), key->get(), EVP_sha256());
  out->chain_file = out->dir + "/chain.pem";
  if (!WriteFile(out->chain_file, PemEncode("CERTIFICATE", CertificateDer(cert.get()))).ok()) return nullptr;
  auto ca = issuance::LoadIssuingCa(out->chain_file, absl::Now());
  if (!ca.ok()) return nullptr;
  out->ca = *std::move(ca);
  auto signer = hsm::SoftwareSigner::FromKey(*std::move(key), "unit test key");
  if (!signer.ok()) return nullptr;
  out->signer = *std::move(signer);
  return out;
}

}  // namespace linesign::testing
