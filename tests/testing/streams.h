// Stream helpers shared by the suites that test SignCsrStream admission (stream limits per station and overall).
#ifndef LINESIGN_TESTS_TESTING_STREAMS_H_
#define LINESIGN_TESTS_TESTING_STREAMS_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "linesign/v1/ca.grpc.pb.h"

namespace linesign::testing {

using SignStream = grpc::ClientReaderWriter<v1::SignCsrRequest, v1::SignCsrStreamResponse>;

// OpenStreamWithOneRequest opens a SignCsrStream on `stub` and sends one request (a fresh P-256 CSR, request id
// `id`); `answer` receives the first answer, so once it holds a certificate the stream is open on the server.
std::unique_ptr<SignStream> OpenStreamWithOneRequest(grpc::ClientContext* ctx, v1::CertificateAuthority::Stub* stub,
                                                     const std::string& id, v1::SignCsrStreamResponse* answer);

// StreamAdmittedAgain opens short streams on `stub` (request ids `id_prefix`0, 1, ...) until one is admitted,
// for up to 2 s: the server forgets a closed stream just after sending its status. True when one was.
bool StreamAdmittedAgain(v1::CertificateAuthority::Stub* stub, const std::string& id_prefix);

}  // namespace linesign::testing

#endif  // LINESIGN_TESTS_TESTING_STREAMS_H_
