#include "server/service/request_checker.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/unknown_field_set.h"
#include "common/utf8.h"
#include "server/csr/csr.h"

namespace linesign::service {
namespace {

absl::Status CheckRequestId(const std::string& id) {
  if (id.empty()) return absl::InvalidArgumentError("request_id is required (1 to 128 printable ASCII characters)");
  if (id.size() > kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat("request_id of ", id.size(), " bytes exceeds 128"));
  }
  for (char c : id) {
    if (!absl::ascii_isprint(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError("request_id must be printable ASCII");
    }
  }
  return absl::OkStatus();
}

// CheckText refuses a request field that is not UTF-8, naming the field and the first offending byte.
absl::Status CheckText(absl::string_view field, const std::string& value) {
  size_t at = FirstInvalidUtf8(value);
  if (at == value.size()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat("%s is not valid UTF-8 (byte 0x%02X at offset %d)", field,
                                                    static_cast<unsigned char>(value[at]), at));
}

// CheckProfileName: empty (the default profile) or a name as configuration allows them. The check is on the
// form only, the same for every caller, so it tells nothing about which profiles exist.
absl::Status CheckProfileName(const std::string& name) {
  if (name.empty()) return absl::OkStatus();
  bool ok = name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
              return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
            });
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("profile ", QuoteForDisplay(name.substr(0, 64)),
                                                 name.size() > 64 ? "..." : "",
                                                 " is not a profile name (1 to 64 of [A-Za-z0-9_-])"));
}

}  // namespace

absl::StatusOr<issuance::SignJob> RequestChecker::Check(const v1::SignCsrRequest& request,
                                                        const std::string& identity,
                                                        std::string* profile_name) const {
  // An identity no rule matches learns nothing, not even which profile names exist: it is refused before the
  // request is looked at.
  if (auto st = access_->AllowRead(identity, "SignCsr"); !st.ok()) return st;
  // A field this server does not know is refused, not carried: a unary request stays in memory until it is
  // answered, and unknown fields are the only part of an accepted request whose size nothing else bounds
  // (queue_size requests x the largest message would otherwise be the cost of one station's flood).
  if (const auto& unknown = request.GetReflection()->GetUnknownFields(request); !unknown.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("the request carries a field linesign.v1.SignCsrRequest does not "
                                                   "define (number ", unknown.field(0).number(), ", ",
                                                   unknown.field_count(), " in all)"));
  }
  // The text fields are `bytes` in the proto so that bytes which are not UTF-8 reach this check (and the audit)
  // instead of failing inside gRPC's parser.
  if (auto st = CheckText("request_id", request.request_id()); !st.ok()) return st;
  if (auto st = CheckText("profile", request.profile()); !st.ok()) return st;
  if (request.csr_case() == v1::SignCsrRequest::kCsrPem) {
    if (auto st = CheckText("csr_pem", request.csr_pem()); !st.ok()) return st;
  }
  if (auto st = CheckRequestId(request.request_id()); !st.ok()) return st;
  if (auto st = CheckProfileName(request.profile()); !st.ok()) return st;
  *profile_name = request.profile().empty() ? profiles_->default_profile() : request.profile();
  // Authorisation comes before the profile is resolved and the CSR is looked at: a station learns nothing about
  // profiles it may not use, not even whether they exist (an unknown name is refused like a forbidden one).
  if (auto st = access_->AllowSign(identity, *profile_name, clock_->Now()); !st.ok()) return st;
  // The one place a profile name is resolved: the request carries the compiled profile from here on.
  auto profile = profiles_->Find(*profile_name);
  if (!profile.ok()) {
    // Validate refuses access rules that name unknown profiles: this is a configuration the server never runs.
    return absl::FailedPreconditionError(
        absl::StrCat("profile '", *profile_name, "' is allowed for '", identity, "' but not configured"));
  }
  absl::string_view input = request.csr_case() == v1::SignCsrRequest::kCsrDer ? request.csr_der()
                                                                              : request.csr_pem();
  auto der = csr::DecodeCsr(input);
  if (!der.ok()) return der.status();
  auto checked = csr::CheckCsr(*der, **profile);
  if (!checked.ok()) return checked.status();
  issuance::SignJob job;
  job.request = csr::MakeIssuanceRequest(*std::move(checked), *std::move(profile), identity, request.request_id());
  return job;
}

}  // namespace linesign::service
