// ParseWebhookUrl: the one parser of events.webhook.url, shared by the configuration's validation and the webhook
// sender (header-only, so the configuration library does not link the sender).
#ifndef LINESIGN_SERVER_LIFECYCLE_WEBHOOK_URL_H_
#define LINESIGN_SERVER_LIFECYCLE_WEBHOOK_URL_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/strings/string_view.h"

namespace linesign::lifecycle {

// WebhookUrl is a parsed http(s) URL.
struct WebhookUrl {
  std::string scheme;       // "http" or "https"
  std::string host;         // a name, an IPv4 address or [an IPv6 address]
  int port = 0;             // explicit or the scheme's default
  std::string path = "/";   // with its query, if any
  // origin is scheme://host:port, what cpp-httplib's client takes.
  std::string origin() const { return absl::StrCat(scheme, "://", host, ":", port); }
};

// ParseWebhookUrl parses scheme://host[:port][/path[?query]]: InvalidArgument naming what is wrong for another
// scheme, no host, a port outside 1..65535, user information (a password would end up in logs) or a fragment.
inline absl::StatusOr<WebhookUrl> ParseWebhookUrl(absl::string_view url) {
  WebhookUrl u;
  absl::string_view rest = url;
  if (absl::ConsumePrefix(&rest, "http://")) {
    u.scheme = "http";
    u.port = 80;
  } else if (absl::ConsumePrefix(&rest, "https://")) {
    u.scheme = "https";
    u.port = 443;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("'", url, "' must start with http:// or https://"));
  }
  if (absl::StrContains(url, "#")) return absl::InvalidArgumentError("a URL fragment (#...) is not allowed");
  size_t slash = rest.find_first_of("/?");
  absl::string_view authority = rest.substr(0, slash);
  if (slash != absl::string_view::npos) {
    u.path = std::string(rest.substr(slash));
    if (u.path[0] == '?') u.path = "/" + u.path;
  }
  if (absl::StrContains(authority, "@")) {
    return absl::InvalidArgumentError("user information (user:password@) is not allowed; use secret_file");
  }
  absl::string_view host = authority;
  absl::string_view port;
  if (absl::StartsWith(authority, "[")) {
    size_t close = authority.find(']');
    if (close == absl::string_view::npos) return absl::InvalidArgumentError("unterminated [IPv6 address]");
    host = authority.substr(0, close + 1);
    absl::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return absl::InvalidArgumentError("unexpected text after the [IPv6 address]");
      port = after.substr(1);
      if (port.empty()) return absl::InvalidArgumentError("empty port");
    }
  } else if (size_t colon = authority.rfind(':'); colon != absl::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
    if (port.empty()) return absl::InvalidArgumentError("empty port");
  }
  if (host.empty() || host == "[]") return absl::InvalidArgumentError(absl::StrCat("'", url, "' has no host"));
  if (!port.empty()) {
    int p = 0;
    if (!absl::SimpleAtoi(port, &p) || p < 1 || p > 65535) {
      return absl::InvalidArgumentError(absl::StrCat("port '", port, "' is not 1 to 65535"));
    }
    u.port = p;
  }
  u.host = std::string(host);
  return u;
}

}  // namespace linesign::lifecycle

#endif  // LINESIGN_SERVER_LIFECYCLE_WEBHOOK_URL_H_
