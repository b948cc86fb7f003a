// FillResponse: a certificate record as SignCsr (and each answer of SignCsrStream) returns it.
#ifndef LINESIGN_SERVER_SERVICE_SIGN_RESPONSE_H_
#define LINESIGN_SERVER_SERVICE_SIGN_RESPONSE_H_

#include <string>

#include "linesign/v1/ca.pb.h"
#include "server/store/certificate_store.h"

namespace linesign::service {

// FillResponse copies a certificate record into a SignCsrResponse.
void FillResponse(const store::CertificateRecord& record, const std::string& chain_pem, bool replayed,
                  v1::SignCsrResponse* response);

}  // namespace linesign::service

#endif  // LINESIGN_SERVER_SERVICE_SIGN_RESPONSE_H_
