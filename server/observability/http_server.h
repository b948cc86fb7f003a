// HttpServer: the server's HTTP listener (config `http`), for what is not gRPC: /metrics for Prometheus, /healthz
// and /readyz for load balancers and systemd, and whatever other components mount with Handle (the CRL, the
// status page).
//
// cpp-httplib (Debian's libcpp-httplib-dev 0.11) rather than civetweb: a small C++ API with handlers as
// std::function, TLS through the OpenSSL we already link (so the listener can present the gRPC certificate and
// ask for the same client certificates), and its limits set in one place. Only GET and HEAD are served.
//
// What a hostile client can cost, bounded here: `threads` worker threads (default 2) and one accepting thread;
// when every worker is busy, at most kMaxQueuedConnections accepted connections wait and the accepting thread
// stops accepting (the kernel's backlog then refuses more). A request line or header line is at most 8 KiB
// (httplib's compiled limit), a body is refused (payload limit 0), every read and write times out after 5 s, a
// kept-alive connection serves at most 5 requests and idles at most 2 s.
#ifndef LINESIGN_SERVER_OBSERVABILITY_HTTP_SERVER_H_
#define LINESIGN_SERVER_OBSERVABILITY_HTTP_SERVER_H_

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "server/auth/authenticator.h"

namespace httplib {
class Server;
}

namespace linesign::observability {

struct HttpRequest {
  std::string path;
  std::multimap<std::string, std::string> params;  // the query string, decoded
  std::string identity;  // the verified client certificate's identity when client certificates are required
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

class HttpServer {
 public:
  static constexpr size_t kMaxQueuedConnections = 16;

  struct Options {
    std::string listen;                  // host:port; port 0 picks a free one
    int threads = 2;                     // worker threads, 1..16
    bool tls = false;                    // serve HTTPS with certificate_file / key_file
    std::string certificate_file;        // PEM chain
    std::string key_file;                // PEM key
    std::string client_ca_file;          // named to clients in the CertificateRequest when `authenticator` is set
    // Optional, borrowed: every request must present a client certificate it accepts (401 with the reason
    // otherwise), exactly as gRPC calls do. Needs `tls`.
    const auth::Authenticator* authenticator = nullptr;
    const Clock* clock = RealClock::Get();  // borrowed
  };
  using Handler = std::function<HttpResponse(const HttpRequest&)>;

  // Start binds `options.listen` and serves on its own threads. Unavailable naming the address when it cannot be
  // bound; InvalidArgument when the TLS files cannot be used.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(Options options);
  ~HttpServer();

  // Handle serves GET (and HEAD) `path` (exact match) with `handler`, replacing any handler of that path. May be
  // called while serving; handlers run on the HTTP threads and must be thread-safe.
  void Handle(const std::string& path, Handler handler);

  // address is the bound host:port.
  const std::string& address() const { return address_; }
  // Stop stops accepting, lets the requests being served finish, and joins the threads. Idempotent.
  void Stop();

 private:
  HttpServer() = default;
  void Dispatch(const void* request, void* response);

  Options options_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::string address_;
  std::mutex mu_;
  std::map<std::string, Handler> handlers_;  // guarded by mu_
  bool stopped_ = false;                     // guarded by mu_
};

}  // namespace linesign::observability

#endif  // LINESIGN_SERVER_OBSERVABILITY_HTTP_SERVER_H_
