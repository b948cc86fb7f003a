#include "server/iot/sigv4.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/openssl_util.h"

namespace linesign::iot {
namespace {

constexpr absl::string_view kAlgorithm = "AWS4-HMAC-SHA256";
constexpr absl::string_view kRedacted = "<redacted>";

bool IsUnreserved(unsigned char c) {
  return absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

// IsTokenChar: RFC 9110 §5.6.2 tchar.
bool IsTokenChar(unsigned char c) {
  if (absl::ascii_isalnum(c)) return true;
  return absl::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != absl::string_view::npos;
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string LowerHex(const unsigned char* bytes, size_t n) {
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(bytes), n));
}

// HmacSha256 returns HMAC-SHA256(key, data) as 32 raw bytes.
std::string HmacSha256(absl::string_view key, absl::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), out, &len);
  std::string result(reinterpret_cast<char*>(out), len);
  OPENSSL_cleanse(out, sizeof(out));
  return result;
}

absl::Status CheckScopePart(absl::string_view what, absl::string_view value) {
  if (value.empty()) return absl::InvalidArgumentError(absl::StrCat("SigV4 ", what, " is empty"));
  for (char c : value) {
    if (!(absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-')) {
      return absl::InvalidArgumentError(absl::StrCat("SigV4 ", what, " '", absl::CHexEscape(value),
                                                     "' holds a character other than [a-z0-9-]"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckHeader(absl::string_view name, absl::string_view value) {
  if (name.empty()) return absl::InvalidArgumentError("SigV4: a header has an empty name");
  for (unsigned char c : name) {
    if (!IsTokenChar(c)) {
      return absl::InvalidArgumentError(
          absl::StrCat("SigV4: header name '", absl::CHexEscape(name), "' is not an HTTP token"));
    }
  }
  for (size_t i = 0; i < value.size(); ++i) {
    unsigned char c = value[i];
    if (c == '\r' && i + 1 < value.size() && value[i + 1] == '\n') continue;
    if (c == '\n') {
      if (i + 1 < value.size() && (value[i + 1] == ' ' || value[i + 1] == '\t')) continue;
      // The value is not echoed: it may be a token.
      return absl::InvalidArgumentError(absl::StrCat("SigV4: the value of header '", name,
                                                     "' holds a line break not followed by a space or tab"));
    }
    if ((c < 0x20 && c != '\t') || c == 0x7f) {
      return absl::InvalidArgumentError(absl::StrCat("SigV4: the value of header '", name,
                                                     "' holds the control character 0x",
                                                     absl::Hex(c, absl::kZeroPad2)));
    }
  }
  return absl::OkStatus();
}

void RemoveHeader(SigV4Request& request, absl::string_view lower_name) {
  auto& h = request.headers;
  h.erase(std::remove_if(h.begin(), h.end(),
                         [&](const auto& kv) { return absl::AsciiStrToLower(kv.first) == lower_name; }),
          h.end());
}

}  // namespace

std::string UriEncode(absl::string_view s, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size() * 3);
  for (unsigned char c : s) {
    if (IsUnreserved(c) || (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  return out;
}

std::string NormalizePath(absl::string_view path) {
  std::vector<absl::string_view> out;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == absl::string_view::npos) end = path.size();
    absl::string_view segment = path.substr(start, end - start);
    if (segment == "..") {
      if (!out.empty()) out.pop_back();
    } else if (!segment.empty() && segment != ".") {
      out.push_back(segment);
    }
    start = end + 1;
  }
  std::string result = absl::StrCat("/", absl::StrJoin(out, "/"));
  if (!out.empty() && !path.empty() && path.back() == '/') result.push_back('/');
  return result;
}

std::string CanonicalHeaderValue(absl::string_view value) {
  std::string out;
  out.reserve(value.size());
  bool pending_space = false;
  for (char c : value) {
    if (IsSpace(c)) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(c);
  }
  return out;
}

std::string HexSha256(absl::string_view data) {
  std::string digest = Sha256(data);
  return LowerHex(reinterpret_cast<const unsigned char*>(digest.data()), digest.size());
}

std::string SigV4Result::DebugString() const {
  return absl::StrCat("canonical request:\n", redacted_canonical_request, "\nstring to sign:\n", string_to_sign);
}

absl::StatusOr<SigV4Result> SignV4(SigV4Request& request, const AwsCredentials& credentials,
                                   const SigV4Scope& scope) {
  if (credentials.access_key_id.empty()) return absl::InvalidArgumentError("SigV4: the access key id is empty");
  for (char c : credentials.access_key_id) {
    if (!absl::ascii_isalnum(c)) {
      return absl::InvalidArgumentError("SigV4: the access key id holds a character other than [A-Za-z0-9]");
    }
  }
  if (credentials.secret_access_key.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("SigV4: the secret access key of access key id ",
                                                   credentials.access_key_id, " is empty"));
  }
  if (auto s = CheckScopePart("region", scope.region); !s.ok()) return s;
  if (auto s = CheckScopePart("service", scope.service); !s.ok()) return s;
  if (request.method.empty()) return absl::InvalidArgumentError("SigV4: the request has no method");
  for (char c : request.method) {
    if (!IsTokenChar(c)) {
      return absl::InvalidArgumentError(
          absl::StrCat("SigV4: method '", absl::CHexEscape(request.method), "' is not an HTTP token"));
    }
  }
  if (request.path.empty() || request.path.front() != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("SigV4: path '", absl::CHexEscape(request.path), "' does not start with '/'"));
  }

  const std::string amz_date = absl::FormatTime("%Y%m%dT%H%M%SZ", scope.time, absl::UTCTimeZone());
  const std::string date = amz_date.substr(0, 8);
  RemoveHeader(request, "authorization");
  RemoveHeader(request, "x-amz-date");
  request.headers.emplace_back("X-Amz-Date", amz_date);
  if (!credentials.session_token.empty()) {
    RemoveHeader(request, "x-amz-security-token");
    request.headers.emplace_back("X-Amz-Security-Token", std::string(credentials.session_token.value()));
  }

  // Canonical headers: lower-case names in byte order; repeated names joined with ',' in the order sent.
  std::map<std::string, std::vector<std::string>> headers;
  for (const auto& [name, value] : request.headers) {
    if (auto s = CheckHeader(name, value); !s.ok()) return s;
    headers[absl::AsciiStrToLower(name)].push_back(CanonicalHeaderValue(value));
  }
  if (headers.find("host") == headers.end()) return absl::InvalidArgumentError("SigV4: the request has no Host header");
  std::string canonical_headers, redacted_headers, signed_headers;
  for (const auto& [name, values] : headers) {
    std::string joined = absl::StrJoin(values, ",");
    absl::StrAppend(&canonical_headers, name, ":", joined, "\n");
    const bool secret = name == "x-amz-security-token";
    absl::StrAppend(&redacted_headers, name, ":", secret ? kRedacted : absl::string_view(joined), "\n");
    if (!signed_headers.empty()) signed_headers.push_back(';');
    signed_headers += name;
  }

  // Canonical query: each name and value encoded, sorted by name, then value.
  std::vector<std::pair<std::string, std::string>> query;
  query.reserve(request.query.size());
  for (const auto& [name, value] : request.query) query.emplace_back(UriEncode(name, false), UriEncode(value, false));
  std::sort(query.begin(), query.end());
  std::string canonical_query;
  for (const auto& [name, value] : query) {
    if (!canonical_query.empty()) canonical_query.push_back('&');
    absl::StrAppend(&canonical_query, name, "=", value);
  }

  const std::string head =
      absl::StrCat(request.method, "\n", UriEncode(NormalizePath(request.path), true), "\n", canonical_query, "\n");
  const std::string tail = absl::StrCat("\n", signed_headers, "\n", HexSha256(request.body));
  SigV4Result result;
  result.canonical_request = absl::StrCat(head, canonical_headers, tail);
  result.redacted_canonical_request = absl::StrCat(head, redacted_headers, tail);
  // canonical_headers holds the session token: wipe it before it is freed.
  OPENSSL_cleanse(canonical_headers.data(), canonical_headers.size());

  const std::string credential_scope = absl::StrCat(date, "/", scope.region, "/", scope.service, "/aws4_request");
  result.string_to_sign = absl::StrCat(kAlgorithm, "\n", amz_date, "\n", credential_scope, "\n",
                                       HexSha256(result.canonical_request));

  std::string key = absl::StrCat("AWS4", credentials.secret_access_key.value());
  Secret k_secret(std::move(key));
  Secret k_date(HmacSha256(k_secret.value(), date));
  Secret k_region(HmacSha256(k_date.value(), scope.region));
  Secret k_service(HmacSha256(k_region.value(), scope.service));
  Secret k_signing(HmacSha256(k_service.value(), "aws4_request"));
  const std::string mac = HmacSha256(k_signing.value(), result.string_to_sign);
  const std::string signature = LowerHex(reinterpret_cast<const unsigned char*>(mac.data()), mac.size());

  result.authorization = absl::StrCat(kAlgorithm, " Credential=", credentials.access_key_id, "/", credential_scope,
                                      ", SignedHeaders=", signed_headers, ", Signature=", signature);
  request.headers.emplace_back("Authorization", result.authorization);
  return result;
}

}  // namespace linesign::iot
