#include "server/iot/http_transport.h"

#include <curl/curl.h>
#include <openssl/crypto.h>

#include <cstring>

#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace linesign::iot {
namespace {

struct Exchange {
  HttpResponse* response;
  size_t max_bytes;
  bool too_large = false;
};

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* x = static_cast<Exchange*>(user);
  const size_t bytes = size * n;
  if (x->response->body.size() + bytes > x->max_bytes) {
    x->too_large = true;
    return 0;  // aborts the transfer with CURLE_WRITE_ERROR
  }
  x->response->body.append(data, bytes);
  return bytes;
}

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* x = static_cast<Exchange*>(user);
  absl::string_view line(data, size * n);
  if (absl::StartsWith(line, "HTTP/")) {
    x->response->headers.clear();  // a new response (after an interim 1xx) starts
    return size * n;
  }
  size_t colon = line.find(':');
  if (colon != absl::string_view::npos) {
    x->response->headers[absl::AsciiStrToLower(absl::StripAsciiWhitespace(line.substr(0, colon)))] =
        std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
  }
  return size * n;
}

std::string HostOf(absl::string_view url) {
  size_t start = url.find("://");
  start = start == absl::string_view::npos ? 0 : start + 3;
  size_t end = url.find('/', start);
  return std::string(url.substr(start, end == absl::string_view::npos ? absl::string_view::npos : end - start));
}

}  // namespace

absl::StatusOr<std::unique_ptr<CurlTransport>> CurlTransport::Create(CurlTransportOptions options) {
  if (options.max_connections < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTP transport: max_connections ", options.max_connections, " must be at least 1"));
  }
  static CURLcode init = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (init != CURLE_OK) {
    return absl::InternalError(absl::StrCat("libcurl initialisation failed: ", curl_easy_strerror(init)));
  }
  return std::unique_ptr<CurlTransport>(new CurlTransport(std::move(options)));
}

CurlTransport::CurlTransport(CurlTransportOptions options) : options_(std::move(options)) {}

CurlTransport::~CurlTransport() {
  std::unique_lock<std::mutex> lock(mu_);
  // Every Send has returned its handle before the transport is destroyed (its owner outlives its callers).
  for (void* h : idle_) curl_easy_cleanup(static_cast<CURL*>(h));
}

void* CurlTransport::Acquire() const {
  std::unique_lock<std::mutex> lock(mu_);
  available_.wait(lock, [&] { return !idle_.empty() || created_ < options_.max_connections; });
  if (!idle_.empty()) {
    void* h = idle_.back();
    idle_.pop_back();
    return h;
  }
  CURL* h = curl_easy_init();
  if (h != nullptr) ++created_;
  return h;
}

void CurlTransport::Release(void* handle) const {
  {
    std::lock_guard<std::mutex> lock(mu_);
    idle_.push_back(handle);
  }
  available_.notify_one();
}

absl::StatusOr<HttpResponse> CurlTransport::Send(const HttpRequest& request) const {
  CURL* curl = static_cast<CURL*>(Acquire());
  if (curl == nullptr) return absl::UnavailableError("HTTP transport: libcurl could not create a handle");
  curl_easy_reset(curl);  // keeps the handle's live connection (keep-alive), drops the last request's options

  HttpResponse response;
  Exchange exchange{.response = &response, .max_bytes = options_.max_response_bytes};
  struct curl_slist* headers = nullptr;
  for (const auto& [name, value] : request.headers) {
    // "Name;" is libcurl's way to send a header with an empty value.
    std::string line = value.empty() ? absl::StrCat(name, ";") : absl::StrCat(name, ": ", value);
    headers = curl_slist_append(headers, line.c_str());
  }
  headers = curl_slist_append(headers, "Expect:");  // no 100-continue round trip for bodies over 1 KiB
  char error[CURL_ERROR_SIZE] = {0};

  curl_easy_setopt(curl, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(absl::ToInt64Milliseconds(options_.connect_timeout)));
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(absl::ToInt64Milliseconds(options_.request_timeout)));
  curl_easy_setopt(curl, CURLOPT_USERAGENT, options_.user_agent.c_str());
  if (!options_.ca_file.empty()) curl_easy_setopt(curl, CURLOPT_CAINFO, options_.ca_file.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &exchange);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &exchange);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error);
  if (request.method == "GET") {
    curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
  } else {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, request.body.data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
  }

  CURLcode rc = curl_easy_perform(curl);
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, nullptr);
  // The header lines hold the session token: wiped before they are freed.
  for (curl_slist* h = headers; h != nullptr; h = h->next) OPENSSL_cleanse(h->data, strlen(h->data));
  curl_slist_free_all(headers);
  Release(curl);

  if (rc != CURLE_OK) {
    const std::string why = absl::StrCat(error[0] != 0 ? error : curl_easy_strerror(rc));
    const std::string where = absl::StrCat("HTTP ", request.method, " to ", HostOf(request.url), ": ");
    if (exchange.too_large) {
      return absl::ResourceExhaustedError(
          absl::StrCat(where, "the answer exceeds ", options_.max_response_bytes, " bytes"));
    }
    if (rc == CURLE_OPERATION_TIMEDOUT) {
      return absl::DeadlineExceededError(absl::StrCat(where, "no complete answer within ",
                                                      absl::FormatDuration(options_.request_timeout), " (", why, ")"));
    }
    return absl::UnavailableError(absl::StrCat(where, why));
  }
  response.status = static_cast<int>(status);
  return response;
}

}  // namespace linesign::iot
