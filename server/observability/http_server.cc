#include "server/observability/http_server.h"

#include <httplib.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include <condition_variable>
#include <deque>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace linesign::observability {
namespace {

// BoundedQueue: httplib's task queue with a fixed number of threads and a bounded wait list. httplib hands it
// each accepted connection from its accepting thread; when the list is full, enqueue blocks that thread, so no
// more connections are accepted until a worker is free (the kernel's listen backlog holds the next few).
class BoundedQueue final : public httplib::TaskQueue {
 public:
  BoundedQueue(int threads, size_t max_waiting) : max_waiting_(max_waiting) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Work(); });
  }
  void enqueue(std::function<void()> fn) override {
    std::unique_lock<std::mutex> lock(mu_);
    space_.wait(lock, [&] { return jobs_.size() < max_waiting_ || shutdown_; });
    jobs_.push_back(std::move(fn));
    work_.notify_one();
  }
  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      shutdown_ = true;
    }
    work_.notify_all();
    space_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  void Work() {
    while (true) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mu_);
        work_.wait(lock, [&] { return !jobs_.empty() || shutdown_; });
        if (jobs_.empty()) return;  // shut down and drained: every accepted socket is served and closed
        fn = std::move(jobs_.front());
        jobs_.pop_front();
      }
      space_.notify_one();
      fn();
    }
  }

  const size_t max_waiting_;
  std::mutex mu_;
  std::condition_variable work_, space_;
  std::deque<std::function<void()>> jobs_;  // guarded by mu_
  bool shutdown_ = false;                   // guarded by mu_
  std::vector<std::thread> threads_;
};

std::string Pem(X509* cert) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, cert);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<size_t>(n));
  BIO_free(bio);
  return out;
}

// AcceptAnyClientCertificate: the handshake only proves the client holds its certificate's key; the chain,
// validity and revocation are checked per request by the Authenticator, as for gRPC, so that a refusal carries
// its reason.
int AcceptAnyClientCertificate(int /*preverify_ok*/, X509_STORE_CTX* /*ctx*/) { return 1; }

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(Options options) {
  std::unique_ptr<HttpServer> s(new HttpServer());
  s->options_ = std::move(options);
  const Options& o = s->options_;
  if (o.authenticator != nullptr && !o.tls) {
    return absl::InvalidArgumentError("http.require_client_certificate: needs http.tls: same-as-grpc");
  }
  if (o.tls) {
    std::string error;
    auto server = std::make_unique<httplib::SSLServer>([&](SSL_CTX& ctx) {
      SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
      if (SSL_CTX_use_certificate_chain_file(&ctx, o.certificate_file.c_str()) != 1) {
        error = absl::StrCat("tls.certificate_file: cannot use ", o.certificate_file, " for HTTPS");
        return false;
      }
      if (SSL_CTX_use_PrivateKey_file(&ctx, o.key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
          SSL_CTX_check_private_key(&ctx) != 1) {
        error = absl::StrCat("tls.key_file: cannot use ", o.key_file, " for HTTPS");
        return false;
      }
      if (o.authenticator != nullptr) {
        SSL_CTX_set_verify(&ctx, SSL_VERIFY_PEER, AcceptAnyClientCertificate);
        if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(o.client_ca_file.c_str())) {
          SSL_CTX_set_client_CA_list(&ctx, names);
        }
      } else {
        SSL_CTX_set_verify(&ctx, SSL_VERIFY_NONE, nullptr);
      }
      return true;
    });
    if (!server->is_valid()) {
      return absl::InvalidArgumentError(error.empty() ? "http: cannot set up TLS" : error);
    }
    s->server_ = std::move(server);
  } else {
    s->server_ = std::make_unique<httplib::Server>();
  }
  httplib::Server& svr = *s->server_;
  const int threads = std::clamp(o.threads, 1, 16);
  svr.new_task_queue = [threads] { return new BoundedQueue(threads, kMaxQueuedConnections); };
  svr.set_read_timeout(5, 0);
  svr.set_write_timeout(5, 0);
  svr.set_keep_alive_max_count(5);
  svr.set_keep_alive_timeout(2);
  svr.set_payload_max_length(0);
  // httplib's default also sets SO_REUSEPORT, which would let a second server "listen" on the same address and
  // split the scrapes between the two: only SO_REUSEADDR (TIME_WAIT is no conflict), as for gRPC.
  svr.set_socket_options([](socket_t sock) {
    int one = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  });
  svr.set_default_headers({{"X-Content-Type-Options", "nosniff"}, {"Cache-Control", "no-store"}});
  HttpServer* self = s.get();
  svr.set_pre_routing_handler([self](const httplib::Request& req, httplib::Response& res) {
    self->Dispatch(&req, &res);
    return httplib::Server::HandlerResponse::Handled;
  });

  const auto colon = o.listen.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(o.listen.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("http.listen: '", o.listen, "' is not host:port"));
  }
  std::string host = o.listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (port == 0) {
    port = svr.bind_to_any_port(host);
    if (port <= 0) return absl::UnavailableError(absl::StrCat("http.listen: cannot listen on ", o.listen));
  } else if (!svr.bind_to_port(host, port)) {
    return absl::UnavailableError(absl::StrCat("http.listen: cannot listen on ", o.listen,
                                               ": the address is in use or not one of this machine's"));
  }
  s->address_ = absl::StrCat(o.listen.substr(0, colon), ":", port);
  s->thread_ = std::thread([self] { self->server_->listen_after_bind(); });
  // httplib's stop() does nothing until its loop has begun: a Stop right after Start would otherwise leave the
  // accepting thread running for good.
  for (int i = 0; i < 5000 && !svr.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return s;
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Handle(const std::string& path, Handler handler) {
  std::lock_guard<std::mutex> lock(mu_);
  handlers_[path] = std::move(handler);
}

void HttpServer::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

void HttpServer::Dispatch(const void* request, void* response) {
  const auto& req = *static_cast<const httplib::Request*>(request);
  auto& res = *static_cast<httplib::Response*>(response);
  if (req.method != "GET" && req.method != "HEAD") {
    res.status = 405;
    res.set_header("Allow", "GET, HEAD");
    res.set_content("only GET and HEAD are served here\n", "text/plain; charset=utf-8");
    return;
  }
  HttpRequest r;
  r.path = req.path;
  for (const auto& [k, v] : req.params) r.params.emplace(k, v);
  if (options_.authenticator != nullptr) {
    std::string leaf_pem, chain_pem;
    if (req.ssl != nullptr) {
      if (X509* leaf = SSL_get1_peer_certificate(req.ssl)) {
        leaf_pem = Pem(leaf);
        X509_free(leaf);
      }
      if (STACK_OF(X509)* chain = SSL_get_peer_cert_chain(req.ssl)) {
        for (int i = 0; i < sk_X509_num(chain); ++i) chain_pem += Pem(sk_X509_value(chain, i));
      }
    }
    auto identity = options_.authenticator->Authenticate(leaf_pem, chain_pem, options_.clock->Now());
    if (!identity.ok()) {
      res.status = 401;
      res.set_content(absl::StrCat(identity.status().message(), "\n"), "text/plain; charset=utf-8");
      return;
    }
    r.identity = *identity;
  }
  Handler handler;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = handlers_.find(r.path);
    if (it != handlers_.end()) handler = it->second;
  }
  if (!handler) {
    res.status = 404;
    res.set_content(absl::StrCat("no such page\n"), "text/plain; charset=utf-8");
    return;
  }
  HttpResponse out = handler(r);
  res.status = out.status;
  res.set_content(std::move(out.body), out.content_type.c_str());
}

}  // namespace linesign::observability
