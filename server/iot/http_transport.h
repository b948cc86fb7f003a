// HttpTransport: how the AWS IoT client sends one HTTP request; CurlTransport, its libcurl implementation with a
// bounded pool of keep-alive connections.
#ifndef LINESIGN_SERVER_IOT_HTTP_TRANSPORT_H_
#define LINESIGN_SERVER_IOT_HTTP_TRANSPORT_H_

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace linesign::iot {

// HttpRequest is a complete request: `url` holds scheme, host, path and the encoded query.
struct HttpRequest {
  std::string method;
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;  // sent as given (Host included)
  std::string body;
};

// HttpResponse is what came back. Header names are lower-case; a repeated header keeps its last value.
struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;
  std::string body;
};

// HttpTransport sends requests. Implementations are thread-safe. Send returns any HTTP answer, whatever its
// status, as a response; it fails only when no complete answer came: Unavailable (could not connect, the
// connection broke, TLS failed), DeadlineExceeded (no complete answer within the timeout), ResourceExhausted (the
// answer exceeded the size bound). Messages name the URL's host and the cause, never a header or the body.
class HttpTransport {
 public:
  virtual ~HttpTransport() = default;
  virtual absl::StatusOr<HttpResponse> Send(const HttpRequest& request) const = 0;
};

// CurlTransportOptions bound what one transport may do.
struct CurlTransportOptions {
  int max_connections = 8;                          // requests in flight at once; more callers wait their turn
  absl::Duration connect_timeout = absl::Seconds(5);
  absl::Duration request_timeout = absl::Seconds(20);  // the whole exchange, connect included
  size_t max_response_bytes = 4 << 20;
  std::string user_agent = "linesign";
  std::string ca_file;  // trust anchors for https; empty: the system's
};

// CurlTransport keeps up to max_connections libcurl easy handles, each holding its own keep-alive connection, and
// lends one to each Send; a caller finding all of them busy waits for one (bounded concurrency). Redirects are
// not followed; only http and https are spoken.
class CurlTransport final : public HttpTransport {
 public:
  // Create fails (Internal) only when libcurl cannot be initialised; InvalidArgument for max_connections < 1.
  static absl::StatusOr<std::unique_ptr<CurlTransport>> Create(CurlTransportOptions options);
  ~CurlTransport() override;

  absl::StatusOr<HttpResponse> Send(const HttpRequest& request) const override;

 private:
  explicit CurlTransport(CurlTransportOptions options);
  void* Acquire() const;
  void Release(void* handle) const;

  const CurlTransportOptions options_;
  mutable std::mutex mu_;
  mutable std::condition_variable available_;
  mutable std::vector<void*> idle_;  // CURL* handles not in use
  mutable int created_ = 0;          // handles created so far, at most max_connections
};

}  // namespace linesign::iot

#endif  // LINESIGN_SERVER_IOT_HTTP_TRANSPORT_H_
