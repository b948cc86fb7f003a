// netsim_pkcs11: a PKCS#11 module for tests and benchmarks that behaves like a network HSM in front of a real
// module (SoftHSM2). It loads the real module, forwards every function through its own CK_FUNCTION_LIST, and adds
// what a network HSM does that a local token does not:
//   - latency on C_Sign (and C_SignInit): fixed or uniform in [min, max] microseconds;
//   - errors at a rate: C_Sign returns CKR_DEVICE_ERROR (after the real C_Sign ran, so the session's signing
//     operation is finished, as a device that answered and lost the answer on the way back);
//   - session loss: every session opened before a moment becomes invalid (the real sessions are closed, so the
//     login is gone too); while the HSM is "away" every call on a session fails CKR_DEVICE_REMOVED and
//     C_OpenSession fails CKR_DEVICE_REMOVED; once back, old handles answer CKR_SESSION_HANDLE_INVALID and new
//     sessions work (after logging in again).
//
// Control: the environment variable LINESIGN_NETSIM_CONFIG names a control file of `key = value` lines ('#'
// starts a comment), re-read when it changed (stat(): inode, size, mtime), looked at no more often than every
// `reread_ms` milliseconds. Tests change it by writing a new file and renaming it over the old one. Keys:
//   module = /usr/lib/softhsm/libsofthsm2.so   the real module (read once, at the first C_GetFunctionList;
//                                               LINESIGN_NETSIM_MODULE in the environment overrides it)
//   sign_latency_us = 1000 | 500-1500          added before each C_Sign (uniform in the range); default 0
//   sign_init_latency_us = ...                 the same before each C_SignInit; default 0
//   latency_mode = added | answer              added (default): the latency is waited before the real C_Sign,
//                                               so a call takes latency + SoftHSM2's own signing time; answer:
//                                               C_Sign answers no sooner than the latency after it was called,
//                                               the real signing counted in it (an HSM signs inside its answer
//                                               time, not on the host's CPU)
//   sign_error_rate = 0.05                     probability that C_Sign answers CKR_DEVICE_ERROR; default 0
//   away = 0 | 1                               1: the HSM is unreachable (all sessions lost); default 0
//   epoch = N                                  a change of N loses every session at once (a fail-over) without
//                                               going away
//   reread_ms = 100                            how often the file is looked at; default 100
//
// Sleeping threads lower their timer slack to 1 µs (a network answer wakes a thread without timer slack, a
// sleep does not), so 1000 µs of latency costs about 1000 µs. Nothing secret (PINs, data) is logged: the module
// prints only its own configuration errors to stderr.
#include <dlfcn.h>
#include <p11-kit/pkcs11.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

namespace netsim {
namespace {

struct Range {
  long min_us = 0;
  long max_us = 0;
};

// Control is the module's state as the control file last said.
struct Control {
  std::atomic<long> sign_min_us{0}, sign_max_us{0};
  std::atomic<long> init_min_us{0}, init_max_us{0};
  std::atomic<double> error_rate{0};
  std::atomic<bool> away{false};
  std::atomic<long> epoch{0};
  std::atomic<long> reread_ms{100};
  std::atomic<bool> answer_mode{false};
};

Control g_control;
CK_FUNCTION_LIST_PTR g_real = nullptr;
CK_FUNCTION_LIST g_list;
std::string g_config_path;

std::mutex g_reload_mu;  // one thread re-reads the file at a time
std::atomic<int64_t> g_next_check_ns{0};
struct FileId {
  ino_t ino = 0;
  off_t size = -1;
  int64_t mtime_ns = 0;
  bool operator==(const FileId& o) const { return ino == o.ino && size == o.size && mtime_ns == o.mtime_ns; }
};
FileId g_file_id;  // guarded by g_reload_mu

int64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

bool ParseRange(const std::string& v, Range* r) {
  char* end = nullptr;
  long a = std::strtol(v.c_str(), &end, 10);
  long b = a;
  if (*end == '-') b = std::strtol(end + 1, &end, 10);
  if (*end != '\0' || a < 0 || b < a) return false;
  r->min_us = a;
  r->max_us = b;
  return true;
}

// ReadConfig reads the control file into key/value pairs; false when it cannot be read.
bool ReadConfig(std::unordered_map<std::string, std::string>* kv) {
  std::ifstream in(g_config_path);
  if (!in) return false;
  std::string line;
  while (std::getline(in, line)) {
    if (size_t hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    (*kv)[Trim(line.substr(0, eq))] = Trim(line.substr(eq + 1));
  }
  return true;
}

// The gate lets calls into the real module run together and lets a session loss wait for them to leave, so that
// closing every real session never races a call on one of them. A waiting loss keeps new calls out (no
// starvation under load).
std::mutex g_gate_mu;
std::condition_variable g_gate_cv;
int g_inside = 0;          // guarded by g_gate_mu
bool g_closing = false;    // guarded by g_gate_mu

class Inside {
 public:
  Inside() {
    std::unique_lock<std::mutex> lock(g_gate_mu);
    g_gate_cv.wait(lock, [] { return !g_closing; });
    ++g_inside;
  }
  ~Inside() {
    std::lock_guard<std::mutex> lock(g_gate_mu);
    if (--g_inside == 0) g_gate_cv.notify_all();
  }
};

// Sessions: ours are numbered from 1 and never reused, so a handle from before a loss can never name a session
// opened after it (SoftHSM2 reuses its handles).
struct RealSession {
  CK_SESSION_HANDLE handle;
  CK_SLOT_ID slot;
};
std::mutex g_sessions_mu;
std::unordered_map<CK_SESSION_HANDLE, RealSession> g_sessions;  // guarded by g_sessions_mu
CK_SESSION_HANDLE g_next_session = 1;                           // guarded by g_sessions_mu

// LoseSessions closes every real session (the login goes with them) and forgets our handles.
void LoseSessions() {
  {
    std::unique_lock<std::mutex> lock(g_gate_mu);
    g_gate_cv.wait(lock, [] { return !g_closing; });
    g_closing = true;
    g_gate_cv.wait(lock, [] { return g_inside == 0; });
  }
  std::unordered_map<CK_SESSION_HANDLE, RealSession> lost;
  {
    std::lock_guard<std::mutex> lock(g_sessions_mu);
    lost.swap(g_sessions);
  }
  std::vector<CK_SLOT_ID> slots;
  for (const auto& [ours, real] : lost) {
    bool seen = false;
    for (CK_SLOT_ID s : slots) seen = seen || s == real.slot;
    if (!seen) slots.push_back(real.slot);
  }
  for (CK_SLOT_ID s : slots) g_real->C_CloseAllSessions(s);
  std::lock_guard<std::mutex> lock(g_gate_mu);
  g_closing = false;
  g_gate_cv.notify_all();
}

// Apply takes a new control file's values; a loss of sessions happens here, on the thread that saw the change.
void Apply(const std::unordered_map<std::string, std::string>& kv) {
  auto get = [&](const char* key) -> const std::string* {
    auto it = kv.find(key);
    return it == kv.end() ? nullptr : &it->second;
  };
  Range r;
  if (const std::string* v = get("sign_latency_us"); v == nullptr || ParseRange(*v, &r)) {
    if (v == nullptr) r = Range{};
    g_control.sign_min_us = r.min_us;
    g_control.sign_max_us = r.max_us;
  } else {
    std::fprintf(stderr, "netsim_pkcs11: sign_latency_us: want N or MIN-MAX microseconds, got '%s'\n", v->c_str());
  }
  if (const std::string* v = get("sign_init_latency_us"); v == nullptr || ParseRange(*v, &r)) {
    if (v == nullptr) r = Range{};
    g_control.init_min_us = r.min_us;
    g_control.init_max_us = r.max_us;
  } else {
    std::fprintf(stderr, "netsim_pkcs11: sign_init_latency_us: want N or MIN-MAX microseconds, got '%s'\n",
                 v->c_str());
  }
  const std::string* rate = get("sign_error_rate");
  g_control.error_rate = rate == nullptr ? 0.0 : std::atof(rate->c_str());
  const std::string* mode = get("latency_mode");
  if (mode != nullptr && *mode != "added" && *mode != "answer") {
    std::fprintf(stderr, "netsim_pkcs11: latency_mode: want added or answer, got '%s'\n", mode->c_str());
  }
  g_control.answer_mode = mode != nullptr && *mode == "answer";
  const std::string* reread = get("reread_ms");
  g_control.reread_ms = reread == nullptr ? 100 : std::max(0L, std::atol(reread->c_str()));
  const std::string* away = get("away");
  const bool now_away = away != nullptr && *away == "1";
  const std::string* epoch = get("epoch");
  const long new_epoch = epoch == nullptr ? 0 : std::atol(epoch->c_str());
  const bool was_away = g_control.away.exchange(now_away);
  const long old_epoch = g_control.epoch.exchange(new_epoch);
  if ((now_away && !was_away) || new_epoch != old_epoch) LoseSessions();
}

// Refresh re-reads the control file when it changed, at most every reread_ms.
void Refresh() {
  if (g_config_path.empty()) return;
  const int64_t now = MonotonicNs();
  if (now < g_next_check_ns.load(std::memory_order_relaxed)) return;
  std::unique_lock<std::mutex> lock(g_reload_mu, std::try_to_lock);
  if (!lock.owns_lock()) return;  // another thread is looking
  g_next_check_ns.store(now + g_control.reread_ms.load() * 1000000, std::memory_order_relaxed);
  struct stat st;
  if (stat(g_config_path.c_str(), &st) != 0) return;  // mid-rename or removed: keep the last state
  FileId id{st.st_ino, st.st_size, static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
  if (id == g_file_id) return;
  std::unordered_map<std::string, std::string> kv;
  if (!ReadConfig(&kv)) return;
  g_file_id = id;
  Apply(kv);
}

thread_local std::mt19937_64 t_rng{std::random_device{}()};
thread_local bool t_slack_set = false;

// DelayUntil sleeps until `start_ns` (CLOCK_MONOTONIC) plus a latency drawn from [min_us, max_us].
void DelayUntil(int64_t start_ns, long min_us, long max_us) {
  if (max_us <= 0) return;
  long us = min_us;
  if (max_us > min_us) us = std::uniform_int_distribution<long>(min_us, max_us)(t_rng);
  if (us <= 0) return;
  if (!t_slack_set) {
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);  // 1 µs: see the file comment
    t_slack_set = true;
  }
  const int64_t until_ns = start_ns + static_cast<int64_t>(us) * 1000;
  timespec until{static_cast<time_t>(until_ns / 1000000000), static_cast<long>(until_ns % 1000000000)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, nullptr) != 0) {
  }
}

void Delay(long min_us, long max_us) { DelayUntil(MonotonicNs(), min_us, max_us); }

// Real finds the real session behind `ours`; false when it was lost or never existed.
bool Real(CK_SESSION_HANDLE ours, RealSession* out) {
  std::lock_guard<std::mutex> lock(g_sessions_mu);
  auto it = g_sessions.find(ours);
  if (it == g_sessions.end()) return false;
  *out = it->second;
  return true;
}

// SessionCall forwards a function whose first argument is a session, translating the handle.
template <typename F>
struct SessionCall;
template <typename... A>
struct SessionCall<CK_RV (*)(CK_SESSION_HANDLE, A...)> {
  template <CK_RV (*CK_FUNCTION_LIST::*kMember)(CK_SESSION_HANDLE, A...)>
  static CK_RV Call(CK_SESSION_HANDLE session, A... args) {
    Refresh();
    if (g_control.away.load()) return CKR_DEVICE_REMOVED;
    Inside inside;
    RealSession real;
    if (!Real(session, &real)) return CKR_SESSION_HANDLE_INVALID;
    return (g_real->*kMember)(real.handle, args...);
  }
};

CK_RV Initialize(void* args) { return g_real->C_Initialize(args); }
CK_RV Finalize(void* reserved) {
  {
    std::lock_guard<std::mutex> lock(g_sessions_mu);
    g_sessions.clear();
  }
  return g_real->C_Finalize(reserved);
}
CK_RV GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list);

CK_RV OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, void* app, CK_NOTIFY notify, CK_SESSION_HANDLE_PTR out) {
  Refresh();
  if (g_control.away.load()) return CKR_DEVICE_REMOVED;
  if (out == nullptr) return CKR_ARGUMENTS_BAD;
  Inside inside;
  CK_SESSION_HANDLE real;
  CK_RV rv = g_real->C_OpenSession(slot, flags, app, notify, &real);
  if (rv != CKR_OK) return rv;
  std::lock_guard<std::mutex> lock(g_sessions_mu);
  *out = g_next_session++;
  g_sessions[*out] = RealSession{real, slot};
  return CKR_OK;
}

CK_RV CloseSession(CK_SESSION_HANDLE session) {
  Refresh();
  if (g_control.away.load()) return CKR_DEVICE_REMOVED;
  Inside inside;
  RealSession real;
  {
    std::lock_guard<std::mutex> lock(g_sessions_mu);
    auto it = g_sessions.find(session);
    if (it == g_sessions.end()) return CKR_SESSION_HANDLE_INVALID;
    real = it->second;
    g_sessions.erase(it);
  }
  return g_real->C_CloseSession(real.handle);
}

CK_RV CloseAllSessions(CK_SLOT_ID slot) {
  Refresh();
  if (g_control.away.load()) return CKR_DEVICE_REMOVED;
  Inside inside;
  {
    std::lock_guard<std::mutex> lock(g_sessions_mu);
    for (auto it = g_sessions.begin(); it != g_sessions.end();) {
      it = it->second.slot == slot ? g_sessions.erase(it) : std::next(it);
    }
  }
  return g_real->C_CloseAllSessions(slot);
}

CK_RV SignInit(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key) {
  Refresh();
  Delay(g_control.init_min_us.load(), g_control.init_max_us.load());
  return SessionCall<CK_C_SignInit>::Call<&CK_FUNCTION_LIST::C_SignInit>(session, mech, key);
}

CK_RV Sign(CK_SESSION_HANDLE session, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR sig, CK_ULONG_PTR sig_len) {
  Refresh();
  CK_RV rv;
  if (g_control.answer_mode.load()) {
    // The device's own signing is part of its answer time: sign, then wait out the rest of the latency.
    const int64_t start = MonotonicNs();
    rv = SessionCall<CK_C_Sign>::Call<&CK_FUNCTION_LIST::C_Sign>(session, data, len, sig, sig_len);
    DelayUntil(start, g_control.sign_min_us.load(), g_control.sign_max_us.load());
  } else {
    Delay(g_control.sign_min_us.load(), g_control.sign_max_us.load());
    rv = SessionCall<CK_C_Sign>::Call<&CK_FUNCTION_LIST::C_Sign>(session, data, len, sig, sig_len);
  }
  const double rate = g_control.error_rate.load();
  if (rv == CKR_OK && sig != nullptr && rate > 0 && std::uniform_real_distribution<double>(0, 1)(t_rng) < rate) {
    return CKR_DEVICE_ERROR;  // the operation is over on the device; the answer is lost
  }
  return rv;
}

// Load opens the real module once; false (with a message on stderr) when it cannot.
bool Load() {
  static std::once_flag once;
  static bool ok = false;
  std::call_once(once, [] {
    const char* cfg = std::getenv("LINESIGN_NETSIM_CONFIG");
    std::string module;
    if (cfg != nullptr && *cfg != '\0') {
      g_config_path = cfg;
      std::unordered_map<std::string, std::string> kv;
      if (!ReadConfig(&kv)) {
        std::fprintf(stderr, "netsim_pkcs11: cannot read LINESIGN_NETSIM_CONFIG=%s\n", cfg);
        return;
      }
      if (auto it = kv.find("module"); it != kv.end()) module = it->second;
    }
    if (const char* m = std::getenv("LINESIGN_NETSIM_MODULE"); m != nullptr && *m != '\0') module = m;
    if (module.empty()) {
      std::fprintf(stderr, "netsim_pkcs11: no real module: set module= in LINESIGN_NETSIM_CONFIG's file or "
                           "LINESIGN_NETSIM_MODULE\n");
      return;
    }
    void* handle = dlopen(module.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      std::fprintf(stderr, "netsim_pkcs11: cannot load %s: %s\n", module.c_str(), dlerror());
      return;
    }
    auto get = reinterpret_cast<CK_C_GetFunctionList>(dlsym(handle, "C_GetFunctionList"));
    if (get == nullptr || get(&g_real) != CKR_OK || g_real == nullptr) {
      std::fprintf(stderr, "netsim_pkcs11: %s has no usable C_GetFunctionList\n", module.c_str());
      return;
    }
    g_list = *g_real;  // every function not replaced below goes straight to the real module
#define NETSIM_SESSION(name) g_list.name = &SessionCall<CK_##name>::Call<&CK_FUNCTION_LIST::name>
    NETSIM_SESSION(C_GetSessionInfo);
    NETSIM_SESSION(C_GetOperationState);
    NETSIM_SESSION(C_SetOperationState);
    NETSIM_SESSION(C_Login);
    NETSIM_SESSION(C_Logout);
    NETSIM_SESSION(C_InitPIN);
    NETSIM_SESSION(C_SetPIN);
    NETSIM_SESSION(C_CreateObject);
    NETSIM_SESSION(C_CopyObject);
    NETSIM_SESSION(C_DestroyObject);
    NETSIM_SESSION(C_GetObjectSize);
    NETSIM_SESSION(C_GetAttributeValue);
    NETSIM_SESSION(C_SetAttributeValue);
    NETSIM_SESSION(C_FindObjectsInit);
    NETSIM_SESSION(C_FindObjects);
    NETSIM_SESSION(C_FindObjectsFinal);
    NETSIM_SESSION(C_EncryptInit);
    NETSIM_SESSION(C_Encrypt);
    NETSIM_SESSION(C_EncryptUpdate);
    NETSIM_SESSION(C_EncryptFinal);
    NETSIM_SESSION(C_DecryptInit);
    NETSIM_SESSION(C_Decrypt);
    NETSIM_SESSION(C_DecryptUpdate);
    NETSIM_SESSION(C_DecryptFinal);
    NETSIM_SESSION(C_DigestInit);
    NETSIM_SESSION(C_Digest);
    NETSIM_SESSION(C_DigestUpdate);
    NETSIM_SESSION(C_DigestKey);
    NETSIM_SESSION(C_DigestFinal);
    NETSIM_SESSION(C_SignUpdate);
    NETSIM_SESSION(C_SignFinal);
    NETSIM_SESSION(C_SignRecoverInit);
    NETSIM_SESSION(C_SignRecover);
    NETSIM_SESSION(C_VerifyInit);
    NETSIM_SESSION(C_Verify);
    NETSIM_SESSION(C_VerifyUpdate);
    NETSIM_SESSION(C_VerifyFinal);
    NETSIM_SESSION(C_VerifyRecoverInit);
    NETSIM_SESSION(C_VerifyRecover);
    NETSIM_SESSION(C_DigestEncryptUpdate);
    NETSIM_SESSION(C_DecryptDigestUpdate);
    NETSIM_SESSION(C_SignEncryptUpdate);
    NETSIM_SESSION(C_DecryptVerifyUpdate);
    NETSIM_SESSION(C_GenerateKey);
    NETSIM_SESSION(C_GenerateKeyPair);
    NETSIM_SESSION(C_WrapKey);
    NETSIM_SESSION(C_UnwrapKey);
    NETSIM_SESSION(C_DeriveKey);
    NETSIM_SESSION(C_SeedRandom);
    NETSIM_SESSION(C_GenerateRandom);
    NETSIM_SESSION(C_GetFunctionStatus);
    NETSIM_SESSION(C_CancelFunction);
#undef NETSIM_SESSION
    g_list.C_Initialize = &Initialize;
    g_list.C_Finalize = &Finalize;
    g_list.C_GetFunctionList = &GetFunctionList;
    g_list.C_OpenSession = &OpenSession;
    g_list.C_CloseSession = &CloseSession;
    g_list.C_CloseAllSessions = &CloseAllSessions;
    g_list.C_SignInit = &SignInit;
    g_list.C_Sign = &Sign;
    if (!g_config_path.empty()) {
      std::unordered_map<std::string, std::string> kv;
      struct stat st;
      if (stat(g_config_path.c_str(), &st) == 0) {
        g_file_id = FileId{st.st_ino, st.st_size,
                           static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
      }
      if (ReadConfig(&kv)) Apply(kv);  // no sessions yet: nothing to lose
    }
    ok = true;
  });
  return ok;
}

CK_RV GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) {
  if (list == nullptr) return CKR_ARGUMENTS_BAD;
  if (!Load()) return CKR_GENERAL_ERROR;
  *list = &g_list;
  return CKR_OK;
}

}  // namespace
}  // namespace netsim

extern "C" __attribute__((visibility("default"))) CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) {
  return netsim::GetFunctionList(list);
}
