// linesign-server: parse flags, load the configuration, wire the parts, serve until SIGTERM — nothing else.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <iostream>
#include <thread>

#include "CLI/CLI.hpp"
#include "common/log.h"
#include "server/config/config.h"
#include "server/dev/dev_mode.h"
#include "server/server.h"
#include "server/store/sqlite/backup.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace {

// Backup copies the store `config_path` names into `out` (server/store/sqlite/backup.h) and says what it copied.
int Backup(const std::string& config_path, const std::string& out) {
  auto config = linesign::config::LoadConfigFile(config_path);
  if (!config.ok()) {
    std::cerr << "linesign-server: " << config_path << ": " << config.status().message() << "\n";
    return 1;
  }
  if (config->store().has_postgres()) {
    std::cerr << "linesign-server: backup: the store is PostgreSQL, which linesign-server does not copy: back it up "
                 "with PostgreSQL's own tools (pg_dump -Fc, or pg_basebackup with WAL archiving); see "
                 "docs/operations.md, \"Backup and restore\"\n";
    return 1;
  }
  if (!config->store().has_sqlite()) {
    std::cerr << "linesign-server: backup: only the sqlite store can be backed up by linesign-server\n";
    return 1;
  }
  auto r = linesign::store::sqlite::BackupDatabase(config->store().sqlite().path(), out);
  if (!r.ok()) {
    std::cerr << "linesign-server: " << r.status().message() << "\n";
    return 1;
  }
  std::cout << "backup of " << config->store().sqlite().path() << " written to " << out << ": " << r->certificates
            << " certificates, schema version " << r->schema_version << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"linesign-server: the linesign certificate authority"};
  std::string config_path, dev_dir, listen = "127.0.0.1:7443", ceremony = linesign::dev::FindCeremonyScript();
  auto* config_opt = app.add_option("--config", config_path, "YAML configuration file");
  auto* dev_opt = app.add_option("--dev", dev_dir,
                                 "Development mode: create (first start) or reuse a self-made CA in DIR");
  auto* listen_opt = app.add_option("--listen", listen, "Development mode: loopback host:port to listen on")
                         ->capture_default_str();
  app.add_option("--ceremony-script", ceremony, "Development mode: the CA ceremony script")->capture_default_str();
  config_opt->excludes(dev_opt);
  listen_opt->needs(dev_opt);
  // backup: a consistent copy of the store of a configuration, made while that server keeps serving.
  std::string backup_config, backup_out;
  CLI::App* backup = app.add_subcommand(
      "backup", "Copy the SQLite store of --config into the new file --out (0600) while the server is running");
  backup->add_option("--config", backup_config, "the server's YAML configuration file")->required();
  backup->add_option("--out", backup_out, "the backup file to create (never overwritten)")->required();
  CLI11_PARSE(app, argc, argv);
  if (backup->parsed()) return Backup(backup_config, backup_out);
  if (config_path.empty() && dev_dir.empty()) {
    std::cerr << "linesign-server: give --config FILE, or --dev DIR for development mode\n" << app.help();
    return 2;
  }

  // The PIN and the TLS key are in this process's memory: no core dumps, no ptrace by other processes of the
  // same user.
  struct rlimit no_core = {0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

  // A file that may not grow (a file size limit, RLIMIT_FSIZE) fails the write with EFBIG, which the store and
  // the audit log report like a full disk, instead of killing the server with SIGXFSZ.
  signal(SIGXFSZ, SIG_IGN);

  // SIGTERM, SIGINT and SIGHUP are taken by a dedicated thread with sigwait: blocked here, before any thread
  // exists.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  if (!dev_dir.empty()) {
    auto path = linesign::dev::PrepareDevDirectory(dev_dir, listen, ceremony);
    if (!path.ok()) {
      std::cerr << "linesign-server: " << path.status().message() << "\n";
      return 1;
    }
    config_path = *path;
  }
  auto config = linesign::config::LoadConfigFile(config_path);
  if (!config.ok()) {
    std::cerr << "linesign-server: " << config_path << ": " << config.status().message() << "\n";
    return 1;
  }
  if (!dev_dir.empty()) {
    config->set_listen(listen);  // --listen wins over the generated file
    // Development mode's HTTP listener: the gRPC port + 2000 on the same host (7443 -> 9443), so servers on
    // different ports never share one; port 0 stays 0.
    const auto colon = listen.rfind(':');
    int port = 0;
    if (colon != std::string::npos && absl::SimpleAtoi(listen.substr(colon + 1), &port)) {
      config->mutable_http()->set_listen(
          absl::StrCat(listen.substr(0, colon), ":", port == 0 ? 0 : (port + 2000 > 65535 ? 0 : port + 2000)));
    }
  }
  auto server = linesign::LinesignServer::Start(*std::move(config));
  if (!server.ok()) {
    std::cerr << "linesign-server: " << server.status().message() << "\n";
    return 1;
  }
  if (!dev_dir.empty()) {
    linesign::LogInfo("development mode: configuration ", config_path, "; CA chain ", dev_dir, "/chain.pem; root ",
                      dev_dir, "/root.pem; station credentials ", dev_dir, "/station (linesign --tls-dir ", dev_dir,
                      "/station), administrator ", dev_dir, "/admin");
  }
  // The HTTP line first: a supervisor (and the tests) reading up to "listening on" has both addresses.
  if (!(*server)->http_address().empty()) {
    std::cout << "linesign-server http on " << (*server)->http_address() << std::endl;
    linesign::LogInfo("http (metrics, health) on ", (*server)->http_address());
  }
  std::cout << "linesign-server listening on " << (*server)->address() << std::endl;
  linesign::LogInfo("listening on ", (*server)->address());

  std::thread waiter([&] {
    int sig = 0;
    // SIGHUP: the station CA bundle and CRLs are read again (a revoked station is refused from its next call) and
    // the audit file is opened again (log rotation).
    while (sigwait(&signals, &sig) == 0 && sig == SIGHUP) {
      if (absl::Status st = (*server)->ReloadTrust(); st.ok()) {
        linesign::LogInfo("received SIGHUP: station CA bundle and CRLs reloaded");
      } else {
        linesign::LogError("received SIGHUP: reload failed, the previous station CAs and CRLs stay in force: ",
                           st.message());
      }
      if (absl::Status st = (*server)->ReopenAudit(); !st.ok()) {
        linesign::LogError("received SIGHUP: the audit file stays as it was: ", st.message());
      }
    }
    linesign::LogInfo("received ", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                      ": refusing new calls, finishing in-flight ones");
    (*server)->Shutdown();
  });
  (*server)->Wait();
  waiter.join();
  server->reset();
  linesign::LogInfo("stopped cleanly");
  return 0;
}
