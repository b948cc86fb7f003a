#!/usr/bin/env bash
# Installs every build, test and runtime dependency of linesign from Debian 12's packages. Idempotent.
set -euo pipefail

PACKAGES=(
  build-essential cmake ccache pkg-config git     # toolchain
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler   # gRPC 1.51, Protobuf 3.21
  libssl-dev openssl                              # OpenSSL 3.0
  libengine-pkcs11-openssl                        # libp11's pkcs11 engine (the CA ceremony's CSR step)
  libp11-kit-dev                                  # the standard pkcs11.h header
  softhsm2 opensc                                 # SoftHSM2 token, pkcs11-tool
  libabsl-dev                                     # absl::Status and friends
  libgtest-dev libgmock-dev libbenchmark-dev      # tests and micro-benchmarks
  libsqlite3-dev sqlite3                          # the embedded store
  libpq-dev                                       # the PostgreSQL store (several replicas on one database)
  postgresql                                      # tests: initdb/pg_ctl start a throw-away server (tests/pg/)
  libyaml-cpp-dev libcli11-dev                    # configuration file, command lines
  libre2-dev                                      # linear-time patterns: access rules, profile value rules
  nlohmann-json3-dev                              # the JSON-lines audit log; AWS IoT REST-JSON bodies
  libcurl4-openssl-dev                            # the AWS IoT client's HTTPS (keep-alive, timeouts, bounded pool)
  awscli                                          # tests: the real AWS CLI proves the fake AWS IoT is faithful
  libjemalloc-dev                                 # the allocator of the server and the load generator
  gnutls-bin                                      # certtool: an independent verifier used by the tests
  python3-cryptography                            # a strict third parser of every certificate the tests issue
  python3-yaml                                    # tests: the IoT registration harness edits the YAML config
  mosquitto mosquitto-clients                     # tests/mosquitto_test: a real MQTT broker with linesign's CRL
  clang libclang-rt-14-dev                        # libFuzzer + sanitizers for scripts/fuzz.sh
  libcpp-httplib-dev                              # the operator's HTTP listener: /metrics, /healthz, /readyz
  prometheus                                      # promtool (metrics and rules checks) and a real scrape in the tests
  haproxy nginx-light                             # tests/lb_test: the deploy/ load balancer recipes, run as written
  systemd                                         # systemd-analyze verify / security on deploy/systemd in the tests
  chromium chromium-driver python3-selenium       # the status page's browser test
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
