#include "hsm/signer.h"

#include <openssl/core_names.h>
#include <openssl/obj_mac.h>

#include "absl/strings/str_cat.h"
#include "common/der.h"

namespace linesign::hsm {

const std::string& AlgorithmIdentifierDer(SignatureAlgorithm alg) {
  static const std::string kEcdsaSha256 = der::Sequence({der::Oid("1.2.840.10045.4.3.2")});
  static const std::string kEcdsaSha384 = der::Sequence({der::Oid("1.2.840.10045.4.3.3")});
  // RFC 4055 §5: the parameters of sha256WithRSAEncryption are an explicit NULL.
  static const std::string kRsaSha256 = der::Sequence({der::Oid("1.2.840.113549.1.1.11"), der::Tlv(der::kNull, "")});
  switch (alg) {
    case SignatureAlgorithm::kEcdsaSha256:
      return kEcdsaSha256;
    case SignatureAlgorithm::kEcdsaSha384:
      return kEcdsaSha384;
    case SignatureAlgorithm::kRsaPkcs1Sha256:
      return kRsaSha256;
  }
  return kEcdsaSha256;
}

const EVP_MD* DigestFor(SignatureAlgorithm alg) {
  return alg == SignatureAlgorithm::kEcdsaSha384 ? EVP_sha384() : EVP_sha256();
}

const char* AlgorithmName(SignatureAlgorithm alg) {
  switch (alg) {
    case SignatureAlgorithm::kEcdsaSha256:
      return "ecdsa-p256-sha256";
    case SignatureAlgorithm::kEcdsaSha384:
      return "ecdsa-p384-sha384";
    case SignatureAlgorithm::kRsaPkcs1Sha256:
      return "rsa-pkcs1-sha256";
  }
  return "unknown";
}

absl::StatusOr<SignatureAlgorithm> AlgorithmForKey(const EVP_PKEY* key) {
  int id = EVP_PKEY_get_base_id(key);
  if (id == EVP_PKEY_EC) {
    char group[64] = {0};
    size_t len = 0;
    if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &len) != 1) {
      return absl::InvalidArgumentError("CA key: cannot read the EC curve");
    }
    std::string g(group, len);
    if (g == "prime256v1" || g == "P-256") return SignatureAlgorithm::kEcdsaSha256;
    if (g == "secp384r1" || g == "P-384") return SignatureAlgorithm::kEcdsaSha384;
    return absl::InvalidArgumentError(absl::StrCat("CA key: unsupported curve ", g, " (P-256 or P-384 only)"));
  }
  if (id == EVP_PKEY_RSA) {
    int bits = EVP_PKEY_get_bits(key);
    if (bits < 2048 || bits > 4096) {
      return absl::InvalidArgumentError(absl::StrCat("CA key: RSA ", bits, " bits; 2048 to 4096 supported"));
    }
    return SignatureAlgorithm::kRsaPkcs1Sha256;
  }
  return absl::InvalidArgumentError("CA key: unsupported key type (ECDSA P-256/P-384 or RSA only)");
}

absl::StatusOr<std::string> EcdsaRawToDer(absl::string_view raw) {
  if (raw.empty() || raw.size() % 2 != 0 || raw.size() > 132) {
    return absl::InternalError(absl::StrCat("ECDSA signature of unexpected length ", raw.size()));
  }
  size_t half = raw.size() / 2;
  std::string r = der::UnsignedInteger(raw.substr(0, half));
  std::string s = der::UnsignedInteger(raw.substr(half));
  return der::Sequence({r, s});
}

}  // namespace linesign::hsm
