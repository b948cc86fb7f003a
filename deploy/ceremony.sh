#!/usr/bin/env bash
# linesign CA key ceremony.
#
# Creates, in DIR: an intermediate CA key pair generated inside a PKCS#11 token (SoftHSM2 by default; the private
# key is sensitive and never extractable), an offline software root CA, and the intermediate certificate signed by
# that root. Uses only standard operator tools: bash, openssl (with the libp11 "pkcs11" engine) and pkcs11-tool
# (OpenSC). See deploy/README.md for the procedure, the reasons behind each step and the use with a real HSM.
#
# stdout: exactly one line, the RFC 7512 URI of the intermediate CA private key.
# stderr: one line per step (unless --quiet), and error messages.
# Exit status: 0 done; 1 a ceremony step failed (files made by this run are removed again); 2 usage error;
#              3 DIR already holds a CA (or leftovers of an earlier run), or the token already has a key with
#                the requested label.

set -euo pipefail
umask 077

readonly PROG=${0##*/}
readonly USAGE="usage: $PROG --dir DIR [--algorithm ec-p256|ec-p384|rsa-2048|rsa-3072|rsa-4096] [--token-label LABEL] [--key-label LABEL]
                   [--root-subject \"/O=.../CN=...\"] [--intermediate-subject \"/O=.../CN=...\"] [--module PATH] [--days-root N] [--days-intermediate N]
                   [--pin-file FILE] [--so-pin-file FILE] [--quiet]"

# libp11 0.4.12 (the OpenSSL pkcs11 engine) passes at most 32 PIN characters through -passin and at most 31
# through pin-source=file: (it also keeps a trailing newline there). Generated PINs are 30 hex characters.
readonly MAX_ENGINE_PIN=32

usage_error() {
  printf '%s: %s\n%s\n' "$PROG" "$1" "$USAGE" >&2
  exit 2
}
die() {  # die STATUS MESSAGE
  printf '%s: %s\n' "$PROG" "$2" >&2
  exit "$1"
}

# ---------------------------------------------------------------------------------------------------- arguments
DIR=""
ALGORITHM="ec-p256"
TOKEN_LABEL="linesign"
KEY_LABEL="linesign-intermediate"
ROOT_SUBJECT="/O=linesign development/CN=linesign development root CA"
INTERMEDIATE_SUBJECT="/O=linesign development/CN=linesign development intermediate CA"
MODULE="/usr/lib/softhsm/libsofthsm2.so"
DAYS_ROOT=3650
DAYS_INTERMEDIATE=1825
PIN_FILE=""
SO_PIN_FILE=""
QUIET=0

while (($#)); do
  opt=$1
  val=""
  has_inline=0
  if [[ $opt == --*=* ]]; then
    val=${opt#*=}
    opt=${opt%%=*}
    has_inline=1
  fi
  case $opt in
    -h | --help)
      printf '%s\n' "$USAGE"
      exit 0
      ;;
    --quiet)
      ((has_inline == 0)) || usage_error "$opt takes no value"
      QUIET=1
      shift
      continue
      ;;
    --dir | --algorithm | --token-label | --key-label | --root-subject | --intermediate-subject | --module | \
      --days-root | --days-intermediate | --pin-file | --so-pin-file)
      if ((has_inline == 0)); then
        (($# >= 2)) || usage_error "$opt needs a value"
        val=$2
        shift 2
      else
        shift
      fi
      ;;
    *)
      usage_error "unknown argument '$opt'"
      ;;
  esac
  case $opt in
    --dir) DIR=$val ;;
    --algorithm) ALGORITHM=$val ;;
    --token-label) TOKEN_LABEL=$val ;;
    --key-label) KEY_LABEL=$val ;;
    --root-subject) ROOT_SUBJECT=$val ;;
    --intermediate-subject) INTERMEDIATE_SUBJECT=$val ;;
    --module) MODULE=$val ;;
    --days-root) DAYS_ROOT=$val ;;
    --days-intermediate) DAYS_INTERMEDIATE=$val ;;
    --pin-file) PIN_FILE=$val ;;
    --so-pin-file) SO_PIN_FILE=$val ;;
  esac
done

[[ -n $DIR ]] || usage_error "--dir is required"

case $ALGORITHM in
  ec-p256) P11_KEY_TYPE="EC:prime256v1" CSR_DIGEST=sha256 ROOT_FAMILY=ec ;;
  ec-p384) P11_KEY_TYPE="EC:secp384r1" CSR_DIGEST=sha384 ROOT_FAMILY=ec ;;
  rsa-2048 | rsa-3072 | rsa-4096) P11_KEY_TYPE="rsa:${ALGORITHM#rsa-}" CSR_DIGEST=sha256 ROOT_FAMILY=rsa ;;
  *) usage_error "--algorithm: unknown value '$ALGORITHM' (expected ec-p256, ec-p384, rsa-2048, rsa-3072 or rsa-4096)" ;;
esac
if [[ $ROOT_FAMILY == ec ]]; then
  ROOT_GENPKEY=(-algorithm EC -pkeyopt ec_paramgen_curve:P-384 -pkeyopt ec_param_enc:named_curve)
  ROOT_DIGEST=sha384
else
  ROOT_GENPKEY=(-algorithm RSA -pkeyopt rsa_keygen_bits:4096)
  ROOT_DIGEST=sha256
fi

for pair in "--days-root:$DAYS_ROOT" "--days-intermediate:$DAYS_INTERMEDIATE"; do
  [[ ${pair#*:} =~ ^[1-9][0-9]{0,5}$ ]] || usage_error "${pair%%:*}: '${pair#*:}' is not a positive number of days"
done
((DAYS_INTERMEDIATE <= DAYS_ROOT)) ||
  usage_error "--days-intermediate ($DAYS_INTERMEDIATE) must not exceed --days-root ($DAYS_ROOT)"

[[ -n $TOKEN_LABEL && ${#TOKEN_LABEL} -le 32 ]] || usage_error "--token-label: must be 1 to 32 characters (PKCS#11 limit)"
[[ $TOKEN_LABEL != *[$'\n\t']* ]] || usage_error "--token-label: must not contain tabs or newlines"
[[ -n $KEY_LABEL && $KEY_LABEL != *[$'\n\t']* ]] || usage_error "--key-label: must be non-empty, without tabs or newlines"
for pair in "--root-subject:$ROOT_SUBJECT" "--intermediate-subject:$INTERMEDIATE_SUBJECT"; do
  [[ ${pair#*:} == /*=* && ${pair#*:} != *$'\n'* ]] ||
    usage_error "${pair%%:*}: '${pair#*:}' is not an OpenSSL subject like \"/O=Example/CN=Example CA\""
done

# Paths end up in softhsm2.conf, an OpenSSL config file and the shell-sourcable ceremony.env: keep them plain.
check_path() {  # check_path FLAG PATH
  [[ $2 =~ ^[A-Za-z0-9/._+@:,=~-]+$ ]] ||
    usage_error "$1: '$2' contains characters this script does not handle (allowed: letters, digits, / . _ + @ : , = ~ -)"
}
check_path --dir "$DIR"
check_path --module "$MODULE"
[[ -f $MODULE && -r $MODULE ]] || usage_error "--module: '$MODULE' is not a readable file"

IS_SOFTHSM=0
[[ ${MODULE##*/} == *softhsm* ]] && IS_SOFTHSM=1

read_pin_file() {  # read_pin_file FLAG FILE VAR MAXLEN: one line, trailing CR/LF removed
  local flag=$1 file=$2 var=$3 max=$4 content
  [[ -f $file && -r $file ]] || usage_error "$flag: '$file' is not a readable file"
  content=$(<"$file") || usage_error "$flag: cannot read '$file'"
  content=${content%$'\r'}
  [[ $content != *$'\n'* ]] || usage_error "$flag: '$file' must hold the PIN on a single line"
  ((${#content} >= 4)) || usage_error "$flag: the PIN in '$file' is shorter than 4 characters"
  ((${#content} <= max)) ||
    usage_error "$flag: the PIN in '$file' is longer than $max characters, which the OpenSSL pkcs11 engine (libp11) cannot pass"
  printf -v "$var" '%s' "$content"
}
absolute() {  # absolute PATH
  if [[ $1 == /* ]]; then printf '%s' "$1"; else printf '%s/%s' "$PWD" "$1"; fi
}

PIN="" SO_PIN=""
if [[ -n $PIN_FILE ]]; then
  read_pin_file --pin-file "$PIN_FILE" PIN "$MAX_ENGINE_PIN"
  PIN_FILE=$(absolute "$PIN_FILE")
  check_path --pin-file "$PIN_FILE"
elif ((!IS_SOFTHSM)); then
  usage_error "--pin-file is required with a module other than SoftHSM2 (the token and its user PIN must already exist)"
fi
if [[ -n $SO_PIN_FILE ]]; then
  ((IS_SOFTHSM)) || usage_error "--so-pin-file is only used with SoftHSM2 (the script initialises that token itself)"
  read_pin_file --so-pin-file "$SO_PIN_FILE" SO_PIN 255
fi

for tool in openssl pkcs11-tool; do
  command -v "$tool" >/dev/null || die 1 "'$tool' not found in PATH (Debian: openssl, opensc)"
done
openssl engine -t pkcs11 </dev/null >/dev/null 2>&1 ||
  die 1 "the OpenSSL pkcs11 engine cannot be loaded (Debian: libengine-pkcs11-openssl; or set OPENSSL_ENGINES)"

# ---------------------------------------------------------------------------------------------------- helpers
step() {
  ((QUIET)) || printf '%s: [%s/9] %s\n' "$PROG" "$1" "$2" >&2
}

CREATED=()   # paths made by this run, removed again if the ceremony fails
KEY_MADE=0   # a key pair now exists on a token this script does not own
SUCCESS=0
TMP=""
LOG=""

cleanup() {
  local status=$?
  [[ -n $TMP ]] && rm -rf -- "$TMP"
  if ((!SUCCESS && ${#CREATED[@]})); then
    local i
    for ((i = ${#CREATED[@]} - 1; i >= 0; i--)); do rm -rf -- "${CREATED[i]}"; done
    printf '%s: the ceremony failed; removed the files it had made in %s (see %s)\n' "$PROG" "$DIR" "$LOG" >&2
    if ((KEY_MADE)); then
      printf '%s: the key pair label=%s id=%s stays on token %s; delete it before running again:\n' \
        "$PROG" "$KEY_LABEL" "$KEY_ID" "$TOKEN_LABEL" >&2
      printf '  pkcs11-tool --module %s --token-label %q --login --delete-object --type privkey --id %s\n' \
        "$MODULE" "$TOKEN_LABEL" "$KEY_ID" >&2
      printf '  pkcs11-tool --module %s --token-label %q --login --delete-object --type pubkey --id %s\n' \
        "$MODULE" "$TOKEN_LABEL" "$KEY_ID" >&2
    fi
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run WHAT CMD...: runs CMD with stdin closed, its output appended to DIR/ceremony.log (never shown unless it
# fails). Command lines never hold PINs: they reach the tools through the environment (env:VAR).
run() {
  local what=$1 out rc=0
  shift
  out=$("$@" 2>&1 </dev/null) || rc=$?
  {
    printf '$'
    printf ' %q' "$@"
    printf '\n'
    [[ -z $out ]] || printf '%s\n' "$out"
  } >>"$LOG"
  if ((rc != 0)); then
    [[ -z $out ]] || printf '%s\n' "$out" >&2
    die 1 "$what failed (exit status $rc)"
  fi
  RUN_OUT=$out
}

# pkcs11-tool reads "--pin env:NAME" / "--so-pin env:NAME" / "--new-pin env:NAME" from the environment
# (pkcs11-tool(1)); the variables are set only for the one command.
p11() {
  local what=$1
  shift
  LINESIGN_CEREMONY_PIN=$PIN LINESIGN_CEREMONY_SO_PIN=$SO_PIN run "$what" pkcs11-tool --module "$MODULE" "$@"
}

# list_private_keys: sets PRIVATE_KEYS to one line per private key on the token, "ID<TAB>Access<TAB>label",
# parsed from pkcs11-tool --list-objects (which in OpenSC 0.23 filters by --type only, not by --id or --label).
list_private_keys() {
  p11 "listing the private keys on token '$TOKEN_LABEL'" --token-label "$TOKEN_LABEL" --login --pin env:LINESIGN_CEREMONY_PIN \
    --list-objects --type privkey
  PRIVATE_KEYS=$(awk '
    function flush() { if (priv) printf "%s\t%s\t%s\n", id, acc, lab; priv = 0 }
    /^[^ \t]/ { flush(); priv = ($0 ~ /^Private Key Object/); id = ""; acc = ""; lab = ""; next }
    priv && /^[ \t]+ID:/     { sub(/^[ \t]+ID:[ \t]*/, "");     id = $0 }
    priv && /^[ \t]+Access:/ { sub(/^[ \t]+Access:[ \t]*/, ""); acc = $0 }
    priv && /^[ \t]+label:/  { sub(/^[ \t]+label:[ \t]*/, "");  lab = $0 }
    END { flush() }' <<<"$RUN_OUT")
}

pct_encode() {  # RFC 7512 / RFC 3986: keep unreserved characters, percent-encode every other byte
  local LC_ALL=C s=$1 out="" c i
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    if [[ $c == [A-Za-z0-9._~-] ]]; then out+=$c; else printf -v c '%%%02X' "'$c"; out+=$c; fi
  done
  printf '%s' "$out"
}

# ---------------------------------------------------------------------------------------------------- 1. DIR
DIR=$(absolute "$DIR")
DIR=${DIR%/}
step 1 "checking and creating $DIR"
[[ ! -e $DIR || -d $DIR ]] || usage_error "--dir: '$DIR' exists and is not a directory"
if [[ -e $DIR/intermediate.pem ]]; then
  die 3 "$DIR already holds a CA ($DIR/intermediate.pem exists); refusing to run the ceremony again. Use another --dir, or remove $DIR to start over."
fi
leftovers=()
for f in softhsm2.conf root root.pem intermediate.csr chain.pem ceremony.env key-id openssl-pkcs11.cnf; do
  [[ -e $DIR/$f ]] && leftovers+=("$f")
done
[[ -z $PIN_FILE && -e $DIR/pin ]] && leftovers+=(pin)
[[ -z $SO_PIN_FILE && $IS_SOFTHSM == 1 && -e $DIR/so-pin ]] && leftovers+=(so-pin)
[[ $IS_SOFTHSM == 1 && -d $DIR/tokens && -n $(ls -A "$DIR/tokens") ]] && leftovers+=(tokens/)
if ((${#leftovers[@]})); then
  die 3 "$DIR holds files of an earlier, unfinished ceremony (${leftovers[*]}); remove them or use another --dir"
fi
if [[ ! -d $DIR ]]; then
  mkdir -p -- "$DIR"
  chmod 0700 "$DIR"
fi
[[ -w $DIR ]] || die 1 "$DIR is not writable"
LOG=$DIR/ceremony.log
printf '# linesign CA ceremony, %s, algorithm %s, module %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$ALGORITHM" "$MODULE" >>"$LOG"
TMP=$(mktemp -d "$DIR/.ceremony-tmp.XXXXXX")

# ---------------------------------------------------------------------------------------------------- 2. SoftHSM2 configuration
if ((IS_SOFTHSM)); then
  step 2 "writing the SoftHSM2 configuration $DIR/softhsm2.conf"
  CREATED+=("$DIR/tokens")
  [[ -d $DIR/tokens ]] || mkdir -m 0700 -- "$DIR/tokens"
  CREATED+=("$DIR/softhsm2.conf")
  cat >"$DIR/softhsm2.conf" <<EOF
# SoftHSM2 configuration for the linesign development token, written by deploy/ceremony.sh.
directories.tokendir = $DIR/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
  export SOFTHSM2_CONF=$DIR/softhsm2.conf
else
  step 2 "skipped: $MODULE is not SoftHSM2; using the existing token '$TOKEN_LABEL'"
fi

# ---------------------------------------------------------------------------------------------------- 3. token
if ((IS_SOFTHSM)); then
  step 3 "initialising SoftHSM2 token '$TOKEN_LABEL'"
  if [[ -z $PIN_FILE ]]; then
    PIN=$(openssl rand -hex 15)
    CREATED+=("$DIR/pin")
    printf '%s' "$PIN" >"$DIR/pin"
    chmod 0600 "$DIR/pin"
    PIN_FILE=$DIR/pin
  fi
  if [[ -z $SO_PIN_FILE ]]; then
    SO_PIN=$(openssl rand -hex 16)
    CREATED+=("$DIR/so-pin")
    printf '%s' "$SO_PIN" >"$DIR/so-pin"
    chmod 0600 "$DIR/so-pin"
  fi
  # softhsm2-util --init-token only takes the PINs as arguments (visible in ps) or from a terminal, so the token
  # is initialised through PKCS#11 with pkcs11-tool, which reads them from the environment. A fresh token
  # directory has exactly one (uninitialised) slot: index 0.
  p11 "initialising the token" --slot-index 0 --init-token --label "$TOKEN_LABEL" --so-pin env:LINESIGN_CEREMONY_SO_PIN
  p11 "setting the user PIN" --token-label "$TOKEN_LABEL" --login --login-type so --so-pin env:LINESIGN_CEREMONY_SO_PIN \
    --init-pin --new-pin env:LINESIGN_CEREMONY_PIN
else
  step 3 "not SoftHSM2, no token initialisation: checking that token '$TOKEN_LABEL' accepts the PIN and has no key labelled '$KEY_LABEL'"
  list_private_keys
  while IFS=$'\t' read -r _ _ label; do
    [[ $label != "$KEY_LABEL" ]] ||
      die 3 "token '$TOKEN_LABEL' already holds a private key labelled '$KEY_LABEL'; choose another --key-label"
  done <<<"$PRIVATE_KEYS"
fi

# ---------------------------------------------------------------------------------------------------- 4. key pair
step 4 "generating the $ALGORITHM intermediate CA key pair inside token '$TOKEN_LABEL'"
KEY_ID=$(openssl rand -hex 8)
((IS_SOFTHSM)) || KEY_MADE=1
p11 "generating the key pair" --token-label "$TOKEN_LABEL" --login --pin env:LINESIGN_CEREMONY_PIN \
  --keypairgen --key-type "$P11_KEY_TYPE" --label "$KEY_LABEL" --id "$KEY_ID" --sensitive --usage-sign
CREATED+=("$DIR/key-id")
printf '%s\n' "$KEY_ID" >"$DIR/key-id"

list_private_keys
access=""
found=0
while IFS=$'\t' read -r id acc _; do
  if [[ $id == "$KEY_ID" ]]; then
    access=$acc
    found=$((found + 1))
  fi
done <<<"$PRIVATE_KEYS"
((found == 1)) || die 1 "expected one private key with id $KEY_ID on token '$TOKEN_LABEL', found $found"
declare -A attrs=()
IFS=',' read -r -a items <<<"$access"
for item in "${items[@]}"; do
  item=${item#"${item%%[![:space:]]*}"}
  item=${item%"${item##*[![:space:]]}"}
  attrs[$item]=1
done
[[ -n ${attrs[sensitive]-} ]] || die 1 "the private key is not CKA_SENSITIVE (pkcs11-tool Access: '$access')"
[[ -n ${attrs[never extractable]-} && -z ${attrs[extractable]-} ]] ||
  die 1 "the private key is extractable or was extractable (pkcs11-tool Access: '$access')"
[[ -n ${attrs[local]-} ]] ||
  printf '%s: warning: the token does not report CKA_LOCAL for the new key (Access: %s)\n' "$PROG" "$access" >&2
printf '# key %s: Access: %s\n' "$KEY_ID" "$access" >>"$LOG"

# ---------------------------------------------------------------------------------------------------- 5. root
step 5 "creating the offline root CA ($([[ $ROOT_FAMILY == ec ]] && echo 'EC P-384' || echo 'RSA 4096'), software key in $DIR/root)"
CREATED+=("$DIR/root")
mkdir -m 0700 -- "$DIR/root"
cat >"$DIR/root/openssl.cnf" <<'EOF'
# OpenSSL configuration of the linesign offline root CA, written by deploy/ceremony.sh.
# v3_root: the self-signed root certificate; v3_intermediate: the intermediate CA certificate it signs.

[req]
distinguished_name = req_dn
prompt = no
utf8 = yes
string_mask = utf8only

[req_dn]
# Not used: the subject is given with -subj.
CN = unused

[v3_root]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[v3_intermediate]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
run "generating the root key" openssl genpkey "${ROOT_GENPKEY[@]}" -out "$DIR/root/root.key"
chmod 0600 "$DIR/root/root.key"

serial() {  # 16 random bytes, top bit cleared so the INTEGER is positive
  local s
  s=$(openssl rand -hex 16)
  printf '0x%02x%s' $((0x${s:0:2} & 0x7f)) "${s:2}"
}
CREATED+=("$DIR/root.pem")
run "creating the root certificate" openssl req -config "$DIR/root/openssl.cnf" -new -x509 -key "$DIR/root/root.key" \
  -subj "$ROOT_SUBJECT" -days "$DAYS_ROOT" "-$ROOT_DIGEST" -set_serial "$(serial)" -extensions v3_root \
  -out "$DIR/root.pem"
if grep -q 'Skipping unknown' <<<"$RUN_OUT"; then die 1 "--root-subject: $(grep -m1 'Skipping unknown' <<<"$RUN_OUT")"; fi
chmod 0644 "$DIR/root.pem"

# ---------------------------------------------------------------------------------------------------- 6. CSR
step 6 "making the intermediate CSR with the token key (OpenSSL pkcs11 engine)"
TOKEN_ENC=$(pct_encode "$TOKEN_LABEL")
KEY_ENC=$(pct_encode "$KEY_LABEL")
KEY_URI="pkcs11:token=$TOKEN_ENC;object=$KEY_ENC;type=private"
# The engine loads the module named here (MODULE_PATH), not p11-kit's default proxy.
CREATED+=("$DIR/openssl-pkcs11.cnf")
cat >"$DIR/openssl-pkcs11.cnf" <<EOF
# OpenSSL configuration for using the linesign CA key through the libp11 pkcs11 engine, written by
# deploy/ceremony.sh. Example:
#   openssl req -config $DIR/openssl-pkcs11.cnf -new -engine pkcs11 -keyform engine \\
#     -key '$KEY_URI' -passin file:PINFILE -subj '/CN=...' -out x.csr
openssl_conf = openssl_init

[openssl_init]
engines = engine_section

[engine_section]
pkcs11 = pkcs11_section

[pkcs11_section]
engine_id = pkcs11
MODULE_PATH = $MODULE
init = 0

[req]
distinguished_name = req_dn
prompt = no
utf8 = yes
string_mask = utf8only

[req_dn]
# Not used: the subject is given with -subj.
CN = unused
EOF
# The public key of the generated pair, looked up by its CKA_ID (pkcs11-tool --read-object cannot export EC
# P-384 public keys in OpenSC 0.23: "cannot create EVP_PKEY").
KEY_ID_ENC=""
for ((i = 0; i < ${#KEY_ID}; i += 2)); do KEY_ID_ENC+="%${KEY_ID:i:2}"; done
PUB_URI="pkcs11:token=$TOKEN_ENC;id=$KEY_ID_ENC;type=public"
OPENSSL_CONF=$DIR/openssl-pkcs11.cnf LINESIGN_CEREMONY_PIN=$PIN run "reading the public key from the token" \
  openssl pkey -engine pkcs11 -inform engine -pubin -in "$PUB_URI" -passin env:LINESIGN_CEREMONY_PIN -pubout \
  -out "$TMP/token-pub.pem"
CREATED+=("$DIR/intermediate.csr")
# -passin env: the libp11 engine asks for the PIN through OpenSSL's UI, which -passin answers.
LINESIGN_CEREMONY_PIN=$PIN run "making the CSR through the pkcs11 engine" \
  openssl req -config "$DIR/openssl-pkcs11.cnf" -new -engine pkcs11 -keyform engine -key "$KEY_URI" \
  -passin env:LINESIGN_CEREMONY_PIN -subj "$INTERMEDIATE_SUBJECT" "-$CSR_DIGEST" -out "$DIR/intermediate.csr"
if grep -q 'Skipping unknown' <<<"$RUN_OUT"; then die 1 "--intermediate-subject: $(grep -m1 'Skipping unknown' <<<"$RUN_OUT")"; fi
run "verifying the CSR signature" openssl req -in "$DIR/intermediate.csr" -verify -noout
run "extracting the CSR public key" openssl req -in "$DIR/intermediate.csr" -noout -pubkey -out "$TMP/csr-pub.pem"
cmp -s "$TMP/csr-pub.pem" "$TMP/token-pub.pem" ||
  die 1 "the CSR's public key is not the public key generated on the token (is '$KEY_LABEL' ambiguous on the token?)"

# ---------------------------------------------------------------------------------------------------- 7. sign
step 7 "signing the intermediate CA certificate with the root"
CREATED+=("$DIR/intermediate.pem")
run "signing the intermediate certificate" openssl x509 -req -in "$DIR/intermediate.csr" \
  -CA "$DIR/root.pem" -CAkey "$DIR/root/root.key" -set_serial "$(serial)" -days "$DAYS_INTERMEDIATE" \
  "-$ROOT_DIGEST" -extfile "$DIR/root/openssl.cnf" -extensions v3_intermediate -out "$DIR/intermediate.pem"
chmod 0644 "$DIR/intermediate.pem"

# ---------------------------------------------------------------------------------------------------- 8. chain, verify
step 8 "writing chain.pem and verifying the chain"
CREATED+=("$DIR/chain.pem")
cp -- "$DIR/intermediate.pem" "$DIR/chain.pem"
chmod 0644 "$DIR/chain.pem"
run "openssl verify" openssl verify -x509_strict -CAfile "$DIR/root.pem" "$DIR/intermediate.pem"
[[ $RUN_OUT == "$DIR/intermediate.pem: OK" ]] || die 1 "openssl verify did not say OK: $RUN_OUT"
run "extracting the certificate public key" openssl x509 -in "$DIR/intermediate.pem" -noout -pubkey -out "$TMP/cert-pub.pem"
cmp -s "$TMP/cert-pub.pem" "$TMP/csr-pub.pem" || die 1 "the intermediate certificate's public key differs from the CSR's"

# ---------------------------------------------------------------------------------------------------- 9. ceremony.env
step 9 "writing $DIR/ceremony.env"
CREATED+=("$DIR/ceremony.env")
{
  printf '# linesign CA ceremony result (deploy/ceremony.sh), %s. Shell-sourcable.\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  printf "LINESIGN_MODULE='%s'\n" "$MODULE"
  printf "LINESIGN_KEY_URI='%s'\n" "$KEY_URI"
  ((IS_SOFTHSM)) && printf "SOFTHSM2_CONF='%s'\n" "$SOFTHSM2_CONF"
  printf "LINESIGN_ALGORITHM='%s'\n" "$ALGORITHM"
  printf "LINESIGN_PIN_FILE='%s'\n" "$PIN_FILE"
  printf "LINESIGN_CHAIN_FILE='%s'\n" "$DIR/chain.pem"
  printf "LINESIGN_ROOT_FILE='%s'\n" "$DIR/root.pem"
  printf "LINESIGN_KEY_ID='%s'\n" "$KEY_ID"
} >"$DIR/ceremony.env"
chmod 0644 "$DIR/ceremony.env"

SUCCESS=1
printf '%s\n' "$KEY_URI"
