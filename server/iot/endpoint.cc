#include "server/iot/endpoint.h"

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace linesign::iot {
namespace {

bool IsLoopback(absl::string_view host) {
  return host == "localhost" || host == "::1" || absl::StartsWith(host, "127.");
}

bool IsHostChar(char c) { return absl::ascii_isalnum(c) || c == '-' || c == '.'; }

}  // namespace

absl::StatusOr<std::string> ResolveRegion(absl::string_view configured, const Environment& env) {
  std::string region(configured), source = "the target's region";
  for (const char* name : {"AWS_REGION", "AWS_DEFAULT_REGION"}) {
    if (!region.empty()) break;
    region = env(name).value_or("");
    source = name;
  }
  if (region.empty()) {
    return absl::FailedPreconditionError(
        "AWS region: not configured for the target, and neither AWS_REGION nor AWS_DEFAULT_REGION is set");
  }
  for (char c : region) {
    if (!(absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-')) {
      return absl::FailedPreconditionError(absl::StrCat("AWS region '", absl::CHexEscape(region), "' (", source,
                                                        ") is not a region name ([a-z0-9-]+, e.g. us-east-1)"));
    }
  }
  return region;
}

absl::StatusOr<Endpoint> ParseEndpoint(absl::string_view url, absl::string_view source) {
  auto bad = [&](absl::string_view why) {
    return absl::FailedPreconditionError(
        absl::StrCat("AWS IoT endpoint '", absl::CHexEscape(url), "' (", source, ") ", why));
  };
  Endpoint e;
  e.source = std::string(source);
  absl::string_view rest = url;
  if (absl::ConsumePrefix(&rest, "https://")) {
    e.scheme = "https";
    e.port = 443;
  } else if (absl::ConsumePrefix(&rest, "http://")) {
    e.scheme = "http";
    e.port = 80;
  } else {
    return bad("is not an http:// or https:// URL");
  }
  absl::ConsumeSuffix(&rest, "/");
  if (rest.find_first_of("/?#@") != absl::string_view::npos) {
    return bad("has a path, query or user part: give only scheme://host[:port]");
  }
  absl::string_view host = rest, port;
  if (absl::ConsumePrefix(&rest, "[")) {
    size_t close = rest.find(']');
    if (close == absl::string_view::npos) return bad("opens an IPv6 address it does not close");
    host = rest.substr(0, close);
    absl::string_view after = rest.substr(close + 1);
    if (!after.empty() && !absl::ConsumePrefix(&after, ":")) return bad("has text after the IPv6 address");
    port = after;
    for (char c : host) {
      if (!(absl::ascii_isxdigit(c) || c == ':' || c == '.')) return bad("has an invalid IPv6 address");
    }
  } else {
    size_t colon = rest.find(':');
    if (colon != absl::string_view::npos) {
      host = rest.substr(0, colon);
      port = rest.substr(colon + 1);
    }
    for (char c : host) {
      if (!IsHostChar(c)) return bad("has a character a host name may not hold");
    }
  }
  if (host.empty()) return bad("has no host");
  if (!port.empty() || absl::EndsWith(rest, ":")) {
    int p = 0;
    if (!absl::SimpleAtoi(port, &p) || p < 1 || p > 65535) return bad("has a port outside 1..65535");
    e.port = p;
  }
  e.host = absl::AsciiStrToLower(host);
  if (e.scheme == "http" && !IsLoopback(e.host)) {
    return bad("uses plain http to a host that is not a loopback address; use https");
  }
  const bool ipv6 = e.host.find(':') != std::string::npos;
  e.host_header = ipv6 ? absl::StrCat("[", e.host, "]") : e.host;
  if (e.port != (e.scheme == "https" ? 443 : 80)) absl::StrAppend(&e.host_header, ":", e.port);
  e.base_url = absl::StrCat(e.scheme, "://", e.host_header);
  return e;
}

absl::StatusOr<Endpoint> ResolveEndpoint(absl::string_view configured, absl::string_view region,
                                         const Environment& env) {
  if (!configured.empty()) return ParseEndpoint(configured, "configuration");
  for (const char* name : {"AWS_ENDPOINT_URL_IOT", "AWS_ENDPOINT_URL"}) {
    std::string value = env(name).value_or("");
    if (!value.empty()) return ParseEndpoint(value, name);
  }
  const char* domain = absl::StartsWith(region, "cn-") ? "amazonaws.com.cn" : "amazonaws.com";
  return ParseEndpoint(absl::StrCat("https://iot.", region, ".", domain), "the public endpoint");
}

}  // namespace linesign::iot
