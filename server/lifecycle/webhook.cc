#include "server/lifecycle/webhook.h"

#include <httplib.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace linesign::lifecycle {
namespace {

std::chrono::microseconds Chrono(absl::Duration d) { return absl::ToChronoMicroseconds(d); }

}  // namespace

absl::StatusOr<std::unique_ptr<WebhookSender>> WebhookSender::Create(store::EventReader* reader,
                                                                     store::CursorStore* cursors, Options options) {
  auto url = ParseWebhookUrl(options.url);
  if (!url.ok()) return absl::InvalidArgumentError(absl::StrCat("events.webhook.url: ", url.status().message()));
  if (options.owner.empty()) return absl::InvalidArgumentError("webhook: an owner is required");
  std::string secret;
  if (!options.secret_file.empty()) {
    std::ifstream in(options.secret_file, std::ios::binary);
    if (!in) return absl::InvalidArgumentError(absl::StrCat("events.webhook.secret_file: cannot read ", options.secret_file));
    std::stringstream ss;
    ss << in.rdbuf();
    secret = ss.str();
    while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
    if (secret.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("events.webhook.secret_file: ", options.secret_file, " is empty"));
    }
  }
  return std::unique_ptr<WebhookSender>(
      new WebhookSender(reader, cursors, std::move(options), *std::move(url), std::move(secret)));
}

WebhookSender::WebhookSender(store::EventReader* reader, store::CursorStore* cursors, Options options,
                             WebhookUrl url, std::string secret)
    : reader_(reader),
      cursors_(cursors),
      options_(std::move(options)),
      url_(std::move(url)),
      secret_(std::move(secret)),
      lease_(std::max(absl::Seconds(10), 3 * options_.timeout)) {
  client_ = std::make_unique<httplib::Client>(url_.origin());
  client_->set_connection_timeout(Chrono(options_.timeout));
  client_->set_read_timeout(Chrono(options_.timeout));
  client_->set_write_timeout(Chrono(options_.timeout));
  client_->set_keep_alive(true);
  if (url_.scheme == "https") client_->enable_server_certificate_verification(true);
  if (options_.uniform) {
    uniform_ = options_.uniform;
  } else {
    auto rng = std::make_shared<std::mt19937_64>(std::random_device{}());
    uniform_ = [rng] { return std::uniform_real_distribution<double>(0.0, 1.0)(*rng); };
  }
}

WebhookSender::~WebhookSender() = default;

std::string WebhookSender::Body(const store::Event& event) {
  nlohmann::json j;
  j["cursor"] = event.id;
  j["type"] = event.type;
  j["serial_hex"] = event.serial_hex;
  j["station"] = event.station;
  j["profile"] = event.profile;
  j["time"] = absl::FormatTime(absl::RFC3339_full, event.time, absl::UTCTimeZone());
  if (event.data.empty()) {
    j["data"] = nullptr;
  } else {
    nlohmann::json data = nlohmann::json::parse(event.data, nullptr, /*allow_exceptions=*/false);
    j["data"] = data.is_discarded() ? nlohmann::json(event.data) : data;
  }
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string WebhookSender::Signature(const std::string& secret, const std::string& body) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(body.data()), body.size(), mac, &len);
  return absl::StrCat("sha256=", absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(mac), len)));
}

absl::Duration WebhookSender::Backoff(int failures, absl::Duration max, double u) {
  absl::Duration bound = kInitialBackoff;
  for (int i = 1; i < failures && bound < max; ++i) bound *= 2;
  bound = std::min(bound, max);
  u = std::clamp(u, 0.0, 1.0);
  return bound * u;
}

absl::Status WebhookSender::Post(const store::Event& event) {
  const std::string body = Body(event);
  httplib::Headers headers = {{"X-Linesign-Cursor", absl::StrCat(event.id)}, {"X-Linesign-Event", event.type}};
  if (!secret_.empty()) headers.emplace("X-Linesign-Signature", Signature(secret_, body));
  const std::string where = absl::StrCat("webhook: POST event ", event.id, " to ", url_.origin(), url_.path);
  httplib::Result res = client_->Post(url_.path, headers, body, "application/json");
  if (!res) {
    const httplib::Error error = res.error();
    const std::string why = error == httplib::Error::Connection ? "cannot connect"
                            : error == httplib::Error::Read
                                ? absl::StrCat("no answer within ", absl::FormatDuration(options_.timeout))
                            : error == httplib::Error::Write ? "cannot send the request"
                                                             : httplib::to_string(error);
    return absl::UnavailableError(absl::StrCat(where, ": ", why));
  }
  const int status = res->status;
  if (status >= 200 && status < 300) return absl::OkStatus();
  if (status >= 400 && status < 500 && status != 408 && status != 429) {
    return absl::FailedPreconditionError(absl::StrCat(where, ": HTTP ", status,
                                                      ": the receiver refuses the event; retried until it takes it"));
  }
  return absl::UnavailableError(absl::StrCat(where, ": HTTP ", status));
}

absl::Status WebhookSender::RunOnce(absl::Time) {
  if (first_round_) {
    first_round_ = false;
    return absl::OkStatus();
  }
  const Clock* clock = options_.clock != nullptr ? options_.clock : RealClock::Get();
  absl::Time t = clock->Now();
  if (!held_ || t >= lease_until_ - lease_ / 2) {
    if (!held_ && t < next_take_) return absl::OkStatus();
    auto taken = cursors_->TakeCursor(kCursorName, options_.owner, t, lease_);
    if (!taken.ok()) {
      held_ = false;
      return taken.status();
    }
    if (!taken->has_value()) {
      held_ = false;
      next_take_ = t + std::min(lease_ / 4, absl::Seconds(1));
      return absl::OkStatus();
    }
    if (!held_) LogInfo("webhook: ", options_.owner, " delivers events after cursor ", **taken);
    held_ = true;
    cursor_ = **taken;
    lease_until_ = t + lease_;
  }
  if (t < next_attempt_) return absl::OkStatus();
  const absl::Time round_start = t;
  LINESIGN_ASSIGN_OR_RETURN(std::vector<store::Event> events, reader_->ReadAfter(cursor_.load(), kReadBatch));
  lag_ = static_cast<int64_t>(events.size());
  for (const store::Event& e : events) {
    absl::Status posted = Post(e);
    t = clock->Now();
    if (!posted.ok()) {
      ++failed_;
      ++streak_;
      const absl::Duration pause = Backoff(streak_, options_.max_backoff, uniform_());
      next_attempt_ = t + pause;
      return absl::Status(posted.code(), absl::StrCat(posted.message(), " (attempt ", streak_, "; next in ",
                                                      absl::FormatDuration(pause), ")"));
    }
    streak_ = 0;
    if (absl::Status st = cursors_->AdvanceCursor(kCursorName, options_.owner, e.id, t, lease_); !st.ok()) {
      // Another process took the lease (this one stalled past it): it delivers from the stored cursor on.
      held_ = false;
      return st;
    }
    cursor_ = e.id;
    lease_until_ = t + lease_;
    --lag_;
    ++delivered_;
    // A round ends after about one timeout's worth of slow answers, so stopping the server (which waits for the
    // round in progress) never waits for a whole batch of them.
    if (t - round_start >= options_.timeout) break;
  }
  return absl::OkStatus();
}

void WebhookSender::OnStop() {
  if (!held_) return;
  if (absl::Status st = cursors_->ReleaseCursor(kCursorName, options_.owner); !st.ok()) {
    LogWarning("webhook: release the delivery lease: ", st.message());
  }
  held_ = false;
}

}  // namespace linesign::lifecycle
