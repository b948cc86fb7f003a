#include "server/service/sign_response.h"

#include "common/openssl_util.h"

namespace linesign::service {

void FillResponse(const store::CertificateRecord& record, const std::string& chain_pem, bool replayed,
                  v1::SignCsrResponse* response) {
  response->set_certificate_der(record.der);
  response->set_certificate_pem(PemEncode("CERTIFICATE", record.der));
  response->set_chain_pem(chain_pem);
  response->set_serial_hex(record.serial_hex);
  response->mutable_not_before()->set_seconds(record.not_before);
  response->mutable_not_after()->set_seconds(record.not_after);
  response->set_request_id(record.request_id);
  response->set_replayed(replayed);
}

}  // namespace linesign::service
