#include "server/iot/credentials.h"

#include <cstdlib>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/openssl_util.h"

namespace linesign::iot {
namespace {

std::string NonEmpty(const Environment& env, const std::string& name) {
  std::optional<std::string> v = env(name);
  return v.has_value() ? *v : std::string();
}

}  // namespace

Environment ProcessEnvironment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

absl::StatusOr<AwsCredentials> ParseSharedCredentials(absl::string_view text, absl::string_view path,
                                                      absl::string_view profile) {
  const std::string where = absl::StrCat("shared credentials file ", path);
  std::map<std::string, Secret> keys;
  bool in_profile = false, found = false;
  int line_number = 0;
  for (absl::string_view raw : absl::StrSplit(text, '\n')) {
    ++line_number;
    absl::ConsumeSuffix(&raw, "\r");
    // An indented line continues the previous value (botocore's nested settings, e.g. for s3): not ours.
    if (!raw.empty() && (raw[0] == ' ' || raw[0] == '\t') && !absl::StripAsciiWhitespace(raw).empty()) continue;
    absl::string_view line = absl::StripAsciiWhitespace(raw);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[') {
      if (line.back() != ']') {
        return absl::FailedPreconditionError(
            absl::StrCat(where, ": line ", line_number, " opens a [section] it does not close"));
      }
      absl::string_view name = absl::StripAsciiWhitespace(line.substr(1, line.size() - 2));
      if (in_profile && name != profile) in_profile = false;
      if (name == profile) {
        if (found) {
          return absl::FailedPreconditionError(
              absl::StrCat(where, ": profile [", profile, "] appears twice (again at line ", line_number, ")"));
        }
        found = in_profile = true;
      }
      continue;
    }
    size_t eq = line.find('=');
    if (eq == absl::string_view::npos) {
      // The line is not echoed: it could be a secret pasted without its key.
      return absl::FailedPreconditionError(
          absl::StrCat(where, ": line ", line_number, " is neither [profile], key = value nor a comment"));
    }
    if (!in_profile) continue;
    std::string key = absl::AsciiStrToLower(absl::StripAsciiWhitespace(line.substr(0, eq)));
    if (keys.count(key) != 0) {
      return absl::FailedPreconditionError(absl::StrCat(where, ": profile [", profile, "] sets ", key,
                                                        " twice (again at line ", line_number, ")"));
    }
    keys.emplace(key, Secret(std::string(absl::StripAsciiWhitespace(line.substr(eq + 1)))));
  }
  if (!found) return absl::NotFoundError(absl::StrCat(where, " has no profile [", profile, "]"));
  AwsCredentials credentials;
  credentials.source = absl::StrCat(where, ", profile [", profile, "]");
  auto take = [&](const char* key) -> Secret {
    auto it = keys.find(key);
    return it == keys.end() ? Secret() : std::move(it->second);
  };
  credentials.access_key_id = std::string(take("aws_access_key_id").value());
  credentials.secret_access_key = take("aws_secret_access_key");
  credentials.session_token = take("aws_session_token");
  if (credentials.session_token.empty()) credentials.session_token = take("aws_security_token");  // older name
  if (credentials.access_key_id.empty() || credentials.secret_access_key.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(where, ": profile [", profile, "] lacks ",
                     credentials.access_key_id.empty() ? "aws_access_key_id" : "aws_secret_access_key",
                     " (both aws_access_key_id and aws_secret_access_key are needed)"));
  }
  return credentials;
}

absl::StatusOr<AwsCredentials> ResolveCredentials(absl::string_view configured_profile, const Environment& env) {
  const std::string env_key = NonEmpty(env, "AWS_ACCESS_KEY_ID");
  Secret env_secret(NonEmpty(env, "AWS_SECRET_ACCESS_KEY"));
  if (configured_profile.empty()) {
    if (!env_key.empty() && !env_secret.empty()) {
      AwsCredentials credentials;
      credentials.access_key_id = env_key;
      credentials.secret_access_key = std::move(env_secret);
      credentials.session_token = Secret(NonEmpty(env, "AWS_SESSION_TOKEN"));
      credentials.source = "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)";
      return credentials;
    }
    if (!env_key.empty() || !env_secret.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("AWS credentials: ", env_key.empty() ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID",
                       " is set but ", env_key.empty() ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
                       " is not; set both, or neither to use the shared credentials file"));
    }
  }
  std::string path = NonEmpty(env, "AWS_SHARED_CREDENTIALS_FILE");
  if (path.empty()) {
    const std::string home = NonEmpty(env, "HOME");
    if (home.empty()) {
      return absl::FailedPreconditionError(
          "AWS credentials: none in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), and neither "
          "AWS_SHARED_CREDENTIALS_FILE nor HOME is set to find a shared credentials file");
    }
    path = absl::StrCat(home, "/.aws/credentials");
  }
  std::string profile(configured_profile);
  std::string profile_source = "the target's profile";
  if (profile.empty()) {
    profile = NonEmpty(env, "AWS_PROFILE");
    profile_source = "AWS_PROFILE";
  }
  if (profile.empty()) {
    profile = "default";
    profile_source = "the default profile";
  }
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "AWS credentials: ",
        configured_profile.empty() ? "none in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), and " : "",
        "profile [", profile, "] (", profile_source, ") cannot be read: ", text.status().message()));
  }
  Secret file(std::move(text).value());
  absl::StatusOr<AwsCredentials> credentials = ParseSharedCredentials(file.value(), path, profile);
  if (!credentials.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("AWS credentials: ", credentials.status().message(),
                                                      " (profile chosen by ", profile_source, ")"));
  }
  return credentials;
}

}  // namespace linesign::iot
