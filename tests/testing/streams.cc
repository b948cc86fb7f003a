#include "tests/testing/streams.h"

#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "tests/testing/certs.h"

namespace linesign::testing {

std::unique_ptr<SignStream> OpenStreamWithOneRequest(grpc::ClientContext* ctx, v1::CertificateAuthority::Stub* stub,
                                                     const std::string& id, v1::SignCsrStreamResponse* answer) {
  auto stream = stub->SignCsrStream(ctx);
  v1::SignCsrRequest req;
  req.set_csr_der(Csr("ec-p256", "/CN=" + id));
  req.set_request_id(id);
  if (stream->Write(req)) stream->Read(answer);
  return stream;
}

bool StreamAdmittedAgain(v1::CertificateAuthority::Stub* stub, const std::string& id_prefix) {
  for (int i = 0; i < 100; ++i) {
    grpc::ClientContext ctx;
    v1::SignCsrStreamResponse answer;
    auto stream = OpenStreamWithOneRequest(&ctx, stub, absl::StrCat(id_prefix, i), &answer);
    stream->WritesDone();
    stream->Finish();
    if (answer.has_certificate()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

}  // namespace linesign::testing
