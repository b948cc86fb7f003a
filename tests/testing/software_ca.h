// SoftwareCa: an in-memory CA (self-signed, key in process memory) for unit tests of the issuing code that do
// not need the HSM; the end-to-end suites use TestCa with SoftHSM2.
#ifndef LINESIGN_TESTS_TESTING_SOFTWARE_CA_H_
#define LINESIGN_TESTS_TESTING_SOFTWARE_CA_H_

#include <memory>
#include <string>

#include "hsm/software_signer.h"
#include "server/issuance/certificate_builder.h"

namespace linesign::testing {

struct SoftwareCa {
  std::string dir;
  std::string chain_file;  // the CA certificate, PEM
  issuance::IssuingCa ca;
  std::unique_ptr<hsm::SoftwareSigner> signer;

  // Create makes a CA with an `algorithm` key ("ec-p256", "ec-p384", "rsa-2048") valid for ten years.
  static std::unique_ptr<SoftwareCa> Create(const std::string& algorithm = "ec-p256");
};

}  // namespace linesign::testing

#endif  // LINESIGN_TESTS_TESTING_SOFTWARE_CA_H_
