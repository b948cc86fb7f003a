// Development mode: a complete, self-made CA in one directory for a first start on a fresh machine.
#ifndef LINESIGN_SERVER_DEV_DEV_MODE_H_
#define LINESIGN_SERVER_DEV_DEV_MODE_H_

#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace linesign::dev {

// PrepareDevDirectory returns the path of DIR/config.yaml. On the first start it runs the CA ceremony script
// (`ceremony_script`, deploy/ceremony.sh) into `dir` — SoftHSM2 token, offline root, intermediate — and writes a
// configuration that uses them with a SQLite store in `dir`; later starts reuse what is there. It also makes the
// transport credentials (DIR/tls: a development station CA and the server's certificate; DIR/station and
// DIR/admin: client credentials for `linesign --tls-dir`) and an access policy letting "station-1" use every
// profile and "admin" administer. `listen` must be a loopback address.
absl::StatusOr<std::string> PrepareDevDirectory(const std::string& dir, const std::string& listen,
                                                const std::string& ceremony_script);

// ReadCeremonyEnv reads the KEY='value' lines of a ceremony result file (DIR/ceremony.env).
absl::StatusOr<std::map<std::string, std::string>> ReadCeremonyEnv(const std::string& path);

// FindCeremonyScript returns the first of the installed and source-tree ceremony scripts that exists.
std::string FindCeremonyScript();

}  // namespace linesign::dev

#endif  // LINESIGN_SERVER_DEV_DEV_MODE_H_
