// linesign-nethsm-bare: the most a PKCS#11 module lets S sessions sign, without linesign. S threads, each with its
// own session on the module's first token (logged in with the PIN file), loop C_SignInit + C_Sign (CKM_ECDSA over
// a 32-byte digest, the token's first private key) for SECONDS and the total rate is printed. bench/nethsm.sh runs
// it on tests/netsim_pkcs11 beside linesign, as the reference a server cannot beat with S sessions.
//
//   linesign-nethsm-bare MODULE SESSIONS PIN_FILE [SECONDS]   (the module's own environment, e.g. SOFTHSM2_CONF
//                                                              and LINESIGN_NETSIM_CONFIG, is inherited)
#include <dlfcn.h>
#include <p11-kit/pkcs11.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: linesign-nethsm-bare MODULE SESSIONS PIN_FILE [SECONDS]\n");
    return 2;
  }
  const int sessions = std::atoi(argv[2]);
  const double seconds = argc > 4 ? std::atof(argv[4]) : 3.0;
  void* handle = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  auto get = handle == nullptr ? nullptr
                               : reinterpret_cast<CK_C_GetFunctionList>(dlsym(handle, "C_GetFunctionList"));
  CK_FUNCTION_LIST_PTR f = nullptr;
  if (get == nullptr || get(&f) != CKR_OK) {
    std::fprintf(stderr, "linesign-nethsm-bare: cannot load %s\n", argv[1]);
    return 1;
  }
  CK_C_INITIALIZE_ARGS init = {};
  init.flags = CKF_OS_LOCKING_OK;
  f->C_Initialize(&init);
  CK_SLOT_ID slots[8];
  CK_ULONG n = 8;
  if (f->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK || n == 0) {
    std::fprintf(stderr, "linesign-nethsm-bare: no token\n");
    return 1;
  }
  std::string pin;
  std::getline(std::ifstream(argv[3]), pin);
  CK_SESSION_HANDLE login;
  f->C_OpenSession(slots[0], CKF_SERIAL_SESSION, nullptr, nullptr, &login);
  if (f->C_Login(login, CKU_USER, reinterpret_cast<CK_UTF8CHAR_PTR>(pin.data()), pin.size()) != CKR_OK) {
    std::fprintf(stderr, "linesign-nethsm-bare: login failed\n");
    return 1;
  }
  CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
  CK_ATTRIBUTE tmpl = {CKA_CLASS, &cls, sizeof(cls)};
  CK_OBJECT_HANDLE key = 0;
  CK_ULONG found = 0;
  f->C_FindObjectsInit(login, &tmpl, 1);
  f->C_FindObjects(login, &key, 1, &found);
  f->C_FindObjectsFinal(login);
  if (found != 1) {
    std::fprintf(stderr, "linesign-nethsm-bare: no private key\n");
    return 1;
  }
  std::atomic<bool> stop{false};
  std::atomic<long> total{0}, failed{0};
  std::vector<std::thread> threads;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < sessions; ++i) {
    threads.emplace_back([&] {
      CK_SESSION_HANDLE s;
      if (f->C_OpenSession(slots[0], CKF_SERIAL_SESSION, nullptr, nullptr, &s) != CKR_OK) {
        ++failed;
        return;
      }
      unsigned char digest[32] = {1}, sig[512];
      CK_MECHANISM mech = {CKM_ECDSA, nullptr, 0};
      long count = 0;
      while (!stop) {
        CK_ULONG len = sizeof(sig);
        if (f->C_SignInit(s, &mech, key) != CKR_OK || f->C_Sign(s, digest, sizeof(digest), sig, &len) != CKR_OK) {
          ++failed;
          break;
        }
        ++count;
      }
      total += count;
      f->C_CloseSession(s);
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (auto& t : threads) t.join();
  std::printf("%.0f\n", total / elapsed);
  return failed == 0 ? 0 : 1;
}
