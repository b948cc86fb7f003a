// linesign-micro-bench: Google Benchmark micro-benchmarks of the per-certificate path, each next to the
// baseline it should be compared with in the same run (see bench/README.md):
//   CSR decode + checks (P-256, RSA-2048)            vs  OpenSSL's d2i_X509_REQ + X509_REQ_verify alone
//   TBSCertificate build (DER template)
//   Issue (TBS + signature) with the SoftHSM2 key    vs  an in-memory key, and bare C_SignInit+C_Sign
//   ECDSA P-256 sign with OpenSSL, in memory         (the raw crypto floor)
//   store commit at batch sizes 1 / 16 / 256         (durable: WAL + synchronous=FULL)
//   store commit of 64 on 200,000 certificates       time-first serials vs fully random ones
// The HSM benchmarks run on a token made by deploy/ceremony.sh in a temporary directory.
#include <benchmark/benchmark.h>

#include <openssl/rand.h>

#include <atomic>
#include <fstream>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "common/openssl_util.h"
#include "hsm/open_signer.h"
#include "hsm/pkcs11_module.h"
#include "server/observability/audit_log.h"
#include "server/config/config.h"
#include "server/csr/csr.h"
#include "server/issuance/certificate_builder.h"
#include "server/store/sqlite/sqlite_store.h"
#include "tests/testing/certs.h"
#include "tests/testing/software_ca.h"
#include "tests/testing/test_ca.h"

namespace linesign {
namespace {

v1::ServerConfig& Config() {
  static v1::ServerConfig* c = [] {
    auto* c = new v1::ServerConfig();
    auto& p = (*c->mutable_profiles())["device"];
    for (const char* k : {"ec-p256", "ec-p384", "ed25519", "rsa"}) p.add_key_types(k);
    config::ApplyDefaults(c);
    return c;
  }();
  return *c;
}
const v1::Profile& Device() { return Config().profiles().at("device"); }
// DeviceProfile is the compiled "device" profile, as the front holds it.
const std::shared_ptr<const profile::Profile>& DeviceProfile() {
  static const auto* p = new std::shared_ptr<const profile::Profile>(*profile::Profile::Compile("device", Device()));
  return *p;
}

const std::string& P256Csr() {
  static const std::string* s = new std::string(testing::Csr("ec-p256", "/CN=AB12CD34EF56/O=Acme"));
  return *s;
}
const std::string& RsaCsr() {
  static const std::string* s = new std::string(testing::Csr("rsa-2048", "/CN=AB12CD34EF56/O=Acme"));
  return *s;
}

// The SoftHSM2 CA: token, chain, a signer with a session per benchmark thread.
struct HsmCa {
  testing::TestCa test_ca;
  issuance::IssuingCa ca;
  std::unique_ptr<hsm::Signer> signer;
  std::unique_ptr<issuance::CertificateBuilder> builder;
};
HsmCa& Hsm() {
  static HsmCa* h = [] {
    auto* h = new HsmCa();
    auto ca = testing::TestCa::Create("ec-p256");
    if (!ca.ok()) abort();
    h->test_ca = *ca;
    auto issuing = issuance::LoadIssuingCa(h->test_ca.chain_pem, absl::Now());
    if (!issuing.ok()) abort();
    h->ca = *std::move(issuing);
    v1::ServerConfig c = h->test_ca.Config("/dev/null");
    auto signer = hsm::OpenSigner(c.hsm(), X509_get0_pubkey(h->ca.certificate.get()), 4);
    if (!signer.ok()) abort();
    h->signer = *std::move(signer);
    h->builder = *issuance::CertificateBuilder::Create(&h->ca, h->signer.get());
    return h;
  }();
  return *h;
}

struct SoftCa {
  std::unique_ptr<testing::SoftwareCa> ca;
  std::unique_ptr<issuance::CertificateBuilder> builder;
};
SoftCa& Soft() {
  static SoftCa* s = [] {
    auto* s = new SoftCa();
    s->ca = testing::SoftwareCa::Create("ec-p256");
    s->builder = *issuance::CertificateBuilder::Create(&s->ca->ca, s->ca->signer.get());
    return s;
  }();
  return *s;
}

void BM_CheckCsr(benchmark::State& state, const std::string& (*csr)()) {
  const std::string& der = csr();
  for (auto _ : state) {
    auto checked = csr::CheckCsr(der, *DeviceProfile());  // what the front runs: key, types and value rules
    if (!checked.ok()) state.SkipWithError(std::string(checked.status().message()).c_str());
    benchmark::DoNotOptimize(checked);
  }
}
BENCHMARK_CAPTURE(BM_CheckCsr, p256, &P256Csr)->ThreadRange(1, 2)->UseRealTime();

// The same checks through OpenSSL's X509_REQ API (the reference path).
void BM_CheckCsrReference(benchmark::State& state) {
  for (auto _ : state) {
    auto checked = csr::CheckCsrReference(P256Csr(), Device(), "device");
    benchmark::DoNotOptimize(checked);
  }
}
BENCHMARK(BM_CheckCsrReference)->ThreadRange(1, 2)->UseRealTime();
BENCHMARK_CAPTURE(BM_CheckCsr, rsa2048, &RsaCsr)->ThreadRange(1, 2)->UseRealTime();

// The OpenSSL calls alone, for comparison: parse and verify the request, nothing else.
void BM_OpensslReqParseVerify(benchmark::State& state) {
  const std::string& der = P256Csr();
  for (auto _ : state) {
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    OsslPtr<X509_REQ> req(d2i_X509_REQ(nullptr, &p, static_cast<long>(der.size())));
    benchmark::DoNotOptimize(X509_REQ_verify(req.get(), X509_REQ_get0_pubkey(req.get())));
  }
}
BENCHMARK(BM_OpensslReqParseVerify)->ThreadRange(1, 2)->UseRealTime();

// P256Request is the request the front makes from P256Csr.
issuance::IssuanceRequest P256Request() {
  return csr::MakeIssuanceRequest(*csr::CheckCsr(P256Csr(), *DeviceProfile()), DeviceProfile(), "bench", "r");
}

void BM_TbsBuild(benchmark::State& state) {
  const issuance::IssuanceRequest request = P256Request();
  std::string serial = issuance::NewSerial();
  absl::Time nb, na, now = absl::Now();
  for (auto _ : state) {
    auto tbs = Soft().builder->TbsDer(request, serial, now, &nb, &na);
    benchmark::DoNotOptimize(tbs);
  }
}
BENCHMARK(BM_TbsBuild);

void BM_Issue(benchmark::State& state, bool hsm) {
  const issuance::CertificateBuilder* builder = hsm ? Hsm().builder.get() : Soft().builder.get();
  const issuance::IssuanceRequest request = P256Request();
  for (auto _ : state) {
    auto cert = builder->Issue(request, issuance::NewSerial(), absl::Now());
    if (!cert.ok()) state.SkipWithError(std::string(cert.status().message()).c_str());
    benchmark::DoNotOptimize(cert);
  }
}
BENCHMARK_CAPTURE(BM_Issue, softhsm2, true)->ThreadRange(1, 2)->UseRealTime();
BENCHMARK_CAPTURE(BM_Issue, in_memory_key, false)->ThreadRange(1, 2)->UseRealTime();

// Bare C_SignInit + C_Sign (CKM_ECDSA over a 32-byte digest) on the same token, one session per thread.
void BM_BareSoftHsmSign(benchmark::State& state) {
  HsmCa& h = Hsm();
  static std::shared_ptr<hsm::Pkcs11Module> module = [&] {
    auto m = hsm::Pkcs11Module::Load(h.test_ca.module, {{"SOFTHSM2_CONF", h.test_ca.softhsm2_conf}});
    if (!m.ok()) abort();
    return *m;
  }();
  CK_FUNCTION_LIST_PTR f = module->functions();
  CK_SLOT_ID slots[16];
  CK_ULONG n = 16;
  f->C_GetSlotList(CK_TRUE, slots, &n);
  CK_SESSION_HANDLE session;
  f->C_OpenSession(slots[0], CKF_SERIAL_SESSION, nullptr, nullptr, &session);
  auto pin = ReadFile(h.test_ca.pin_file);
  f->C_Login(session, CKU_USER, reinterpret_cast<CK_UTF8CHAR_PTR>(pin->data()), pin->size());  // may be "already"
  CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
  CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof(cls)}};
  CK_OBJECT_HANDLE key = 0;
  CK_ULONG found = 0;
  f->C_FindObjectsInit(session, tmpl, 1);
  f->C_FindObjects(session, &key, 1, &found);
  f->C_FindObjectsFinal(session);
  if (found != 1) state.SkipWithError("no private key on the token");
  std::string digest = Sha256("linesign");
  CK_MECHANISM mech = {CKM_ECDSA, nullptr, 0};
  unsigned char sig[132];
  for (auto _ : state) {
    CK_ULONG len = sizeof(sig);
    if (f->C_SignInit(session, &mech, key) != CKR_OK ||
        f->C_Sign(session, reinterpret_cast<CK_BYTE_PTR>(digest.data()), digest.size(), sig, &len) != CKR_OK) {
      state.SkipWithError("C_Sign failed");
      break;
    }
  }
  f->C_CloseSession(session);
}
BENCHMARK(BM_BareSoftHsmSign)->ThreadRange(1, 2)->UseRealTime();

// The CA key's signer as the server opens it (hashing, session pool, C_SignInit + C_Sign), signing with the token
// object (0) or with each session's session-object copy of it (1: hsm.session_key_copy).
void BM_SignerSign(benchmark::State& state) {
  HsmCa& h = Hsm();
  static std::unique_ptr<hsm::Signer> signers[2];
  static std::once_flag once;
  std::call_once(once, [&] {
    for (int copy = 0; copy < 2; ++copy) {
      v1::ServerConfig c = h.test_ca.Config("/dev/null");
      c.mutable_hsm()->set_session_key_copy(copy == 1);
      auto signer = hsm::OpenSigner(c.hsm(), X509_get0_pubkey(h.ca.certificate.get()), 4);
      if (!signer.ok()) abort();
      signers[copy] = *std::move(signer);
    }
  });
  const hsm::Signer& signer = *signers[state.range(0)];
  std::string tbs(400, 'x');
  for (auto _ : state) {
    if (!signer.Sign(tbs).ok()) {
      state.SkipWithError("Sign failed");
      break;
    }
  }
}
BENCHMARK(BM_SignerSign)->ArgName("session_key_copy")->Arg(0)->Arg(1)->ThreadRange(1, 2)->UseRealTime();

void BM_OpensslEcdsaP256Sign(benchmark::State& state) {
  OsslPtr<EVP_PKEY> key(EVP_EC_gen("P-256"));
  std::string digest = Sha256("linesign");
  unsigned char sig[80];
  for (auto _ : state) {
    OsslPtr<EVP_PKEY_CTX> ctx(EVP_PKEY_CTX_new(key.get(), nullptr));
    size_t len = sizeof(sig);
    EVP_PKEY_sign_init(ctx.get());
    EVP_PKEY_sign(ctx.get(), sig, &len, reinterpret_cast<const unsigned char*>(digest.data()), digest.size());
  }
}
BENCHMARK(BM_OpensslEcdsaP256Sign)->ThreadRange(1, 2)->UseRealTime();

// One audit entry as a successful issue writes it: the JSON line, without the write.
void BM_AuditJson(benchmark::State& state) {
  audit::Entry e;
  e.time = absl::Now();
  e.rpc = "SignCsrStream";
  e.identity = "line3-st7";
  e.peer = "ipv4:127.0.0.1:55416";
  e.profile = "device";
  e.request_id = "F075BD7F-4C1A-4B8E-9A51-2D259A1F18AC";
  e.outcome = "issued";
  e.code = "OK";
  e.serial_hex = "2D259A1F18AC4581D0B6F71FA404766D";
  e.subject = "O=Acme,CN=DEVICE000001";
  for (auto _ : state) benchmark::DoNotOptimize(audit::AuditLog::Json(e));
}
BENCHMARK(BM_AuditJson);

void BM_StoreCommit(benchmark::State& state) {
  std::string path = testing::TempDir("linesign-bench-store") + "/bench.db";
  auto store = *store::SqliteStore::Open(path);
  auto issued = *Soft().builder->Issue(P256Request(), issuance::NewSerial(), absl::Now());
  const int batch = static_cast<int>(state.range(0));
  int64_t next = 0;
  for (auto _ : state) {
    state.PauseTiming();
    store::Batch records;
    records.entries.resize(batch);
    for (auto& entry : records.entries) {
      store::CertificateRecord& r = entry.cert;
      r.issuer_id = "bench";
      r.serial_hex = Hex(issuance::NewSerial());
      r.subject = "CN=AB12CD34EF56";
      r.station = "bench";
      r.profile = "device";
      r.request_id = absl::StrCat(next++);
      r.der = issued.der;
    }
    state.ResumeTiming();
    auto outcomes = store->RecordBatch(records);
    if (!outcomes.ok()) state.SkipWithError(std::string(outcomes.status().message()).c_str());
  }
  state.counters["certs_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * batch, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_StoreCommit)->Arg(1)->Arg(16)->Arg(256)->UseRealTime();

// ProcIo: this process's write counters (/proc/self/io).
struct ProcIo {
  int64_t wchar = 0, syscw = 0;
};
ProcIo ReadProcIo() {
  ProcIo io;
  std::ifstream in("/proc/self/io");
  std::string key;
  int64_t value;
  while (in >> key >> value) {
    if (key == "wchar:") io.wchar = value;
    if (key == "syscw:") io.syscw = value;
  }
  return io;
}

// BM_StoreCommitFilled: durable commits of 64 certificates (a full batch) on a store already holding 200,000,
// with the serials NewSerial makes (time first: a batch's serials are neighbours in the serial index) or fully
// random ones (the layout before): what the serial layout costs the commit once the index outgrows a few pages.
// Counters per certificate: the bytes the process passed to write system calls (the log, and the checkpointer's
// copies into the database file) and the number of those calls, from /proc/self/io.
void BM_StoreCommitFilled(benchmark::State& state) {
  const bool time_first = state.range(0) == 1;
  std::string path = testing::TempDir("linesign-bench-store") + "/filled.db";
  auto store = *store::SqliteStore::Open(path);
  auto issued = *Soft().builder->Issue(P256Request(), issuance::NewSerial(), absl::Now());
  auto serial = [&] {
    if (time_first) return Hex(issuance::NewSerial());
    unsigned char bytes[16];
    RAND_bytes(bytes, sizeof(bytes));
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    return Hex(std::string(reinterpret_cast<char*>(bytes), sizeof(bytes)));
  };
  int64_t next = 0;
  auto batch_of = [&](int n) {
    store::Batch records;
    records.entries.resize(n);
    for (auto& entry : records.entries) {
      store::CertificateRecord& r = entry.cert;
      r.issuer_id = "bench";
      r.serial_hex = serial();
      r.subject = "CN=AB12CD34EF56";
      r.station = "bench";
      r.profile = "device";
      r.request_id = absl::StrCat(next++);
      r.der = issued.der;
    }
    return records;
  };
  for (int i = 0; i < 200; ++i) (void)store->RecordBatch(batch_of(1000));
  const ProcIo before = ReadProcIo();
  for (auto _ : state) {
    state.PauseTiming();
    store::Batch records = batch_of(64);
    state.ResumeTiming();
    auto outcomes = store->RecordBatch(records);
    if (!outcomes.ok()) state.SkipWithError(std::string(outcomes.status().message()).c_str());
  }
  const ProcIo after = ReadProcIo();
  const double certs = static_cast<double>(state.iterations()) * 64;
  state.counters["written_kib_per_cert"] = static_cast<double>(after.wchar - before.wchar) / 1024 / certs;
  state.counters["writes_per_cert"] = static_cast<double>(after.syscw - before.syscw) / certs;
  state.counters["certs_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * 64, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_StoreCommitFilled)->ArgName("time_first")->Arg(0)->Arg(1)->Iterations(400)->UseRealTime();

}  // namespace
}  // namespace linesign

BENCHMARK_MAIN();
