// MountStatusPage: the line's status page, served by the server itself at /status (one static HTML file with its
// script, embedded in the binary: no build toolchain, no files at run time), polling /status.json every second:
// certificates per second over the last five minutes as a chart, per-station counts and refusals, latency
// percentiles over the last minute, queue depth, HSM and store health, the outbox backlog.
#ifndef LINESIGN_SERVER_OBSERVABILITY_STATUS_PAGE_H_
#define LINESIGN_SERVER_OBSERVABILITY_STATUS_PAGE_H_

#include "server/observability/health_monitor.h"
#include "server/observability/http_server.h"
#include "server/observability/server_metrics.h"

namespace linesign::observability {

// MountStatusPage mounts "/", "/status" and "/status.json" on `http`. `metrics` and `health` are borrowed and
// must outlive the listener.
void MountStatusPage(HttpServer* http, ServerMetrics* metrics, const HealthMonitor* health);

}  // namespace linesign::observability

#endif  // LINESIGN_SERVER_OBSERVABILITY_STATUS_PAGE_H_
