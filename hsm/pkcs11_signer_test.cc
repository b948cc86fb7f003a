// Pkcs11Signer against a real SoftHSM2 token, and through a wrapped function list that injects failures.
#include "hsm/pkcs11_signer.h"

#include <openssl/x509.h>

#include <atomic>
#include <thread>

#include "common/openssl_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/test_ca.h"

namespace linesign::hsm {
namespace {

// Failure injection: a copy of the module's function list whose C_Sign reports CKR_SESSION_HANDLE_INVALID while
// g_fail_signs > 0.
std::atomic<int> g_fail_signs{0};
CK_FUNCTION_LIST g_wrapped;
CK_C_Sign g_real_sign = nullptr;
CK_RV FailingSign(CK_SESSION_HANDLE s, CK_BYTE_PTR d, CK_ULONG dl, CK_BYTE_PTR sig, CK_ULONG_PTR sl) {
  if (g_fail_signs.fetch_sub(1) > 0) {
    g_real_sign(s, d, dl, sig, sl);  // finish the operation the module started
    return CKR_SESSION_HANDLE_INVALID;
  }
  return g_real_sign(s, d, dl, sig, sl);
}

class Pkcs11SignerTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto ca = linesign::testing::TestCa::Create(GetParam());
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = *ca;
    auto module = Pkcs11Module::Load(ca_.module, {{"SOFTHSM2_CONF", ca_.softhsm2_conf}});
    ASSERT_TRUE(module.ok()) << module.status();
    module_ = *module;
    auto pem = ReadFile(ca_.chain_pem);
    auto certs = ParseCertificatesPem(*pem, "chain");
    ASSERT_TRUE(certs.ok());
    cert_ = std::move((*certs)[0]);
    auto pin = LoadPinFromFile(ca_.pin_file);
    ASSERT_TRUE(pin.ok());
    pin_.emplace(std::move(*pin));
  }

  bool Verifies(const std::string& message, const std::string& sig, SignatureAlgorithm alg) {
    OsslPtr<EVP_MD_CTX> ctx(EVP_MD_CTX_new());
    return EVP_DigestVerifyInit(ctx.get(), nullptr, DigestFor(alg), nullptr, X509_get0_pubkey(cert_.get())) == 1 &&
           EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                            reinterpret_cast<const unsigned char*>(message.data()), message.size()) == 1;
  }

  linesign::testing::TestCa ca_;
  std::shared_ptr<Pkcs11Module> module_;
  OsslPtr<X509> cert_;
  std::optional<Pin> pin_;
};

TEST_P(Pkcs11SignerTest, SignaturesVerifyWithTheCaCertificateFromManyThreads) {
  auto uri = ParsePkcs11Uri(ca_.key_uri);
  ASSERT_TRUE(uri.ok());
  auto signer = Pkcs11Signer::Create(module_, *uri, *pin_, X509_get0_pubkey(cert_.get()), 2);
  ASSERT_TRUE(signer.ok()) << signer.status();
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        std::string msg = "tbs-" + std::to_string(t) + "-" + std::to_string(i);
        auto sig = (*signer)->Sign(msg);
        if (sig.ok() && Verifies(msg, *sig, (*signer)->algorithm())) ++good;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(good.load(), 80);
  EXPECT_LE((*signer)->open_sessions(), 2);  // the pool is bounded
}

TEST_P(Pkcs11SignerTest, LostSessionIsReplacedAndTheSignatureRetried) {
  g_wrapped = *module_->functions();
  g_real_sign = g_wrapped.C_Sign;
  g_wrapped.C_Sign = FailingSign;
  auto wrapped = Pkcs11Module::ForFunctionList(&g_wrapped, "wrapped");
  auto uri = ParsePkcs11Uri(ca_.key_uri);
  auto signer = Pkcs11Signer::Create(wrapped, *uri, *pin_, X509_get0_pubkey(cert_.get()), 2);
  ASSERT_TRUE(signer.ok()) << signer.status();
  g_fail_signs = 1;
  auto sig = (*signer)->Sign("after a lost session");
  ASSERT_TRUE(sig.ok()) << sig.status();
  EXPECT_TRUE(Verifies("after a lost session", *sig, (*signer)->algorithm()));
  g_fail_signs = 3;  // every attempt fails (fresh session, then logged in again): Unavailable, with the reason
  auto failed = (*signer)->Sign("twice lost");
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(failed.status().message()), ::testing::HasSubstr("CKR_SESSION_HANDLE_INVALID"));
  g_fail_signs = 0;
  EXPECT_TRUE((*signer)->Sign("recovered").ok());
}

// TokenSlot returns the slot of the test token.
CK_SLOT_ID TokenSlot(CK_FUNCTION_LIST_PTR f) {
  CK_SLOT_ID slots[8];
  CK_ULONG n = 8;
  EXPECT_EQ(f->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
  EXPECT_GE(n, 1u);
  return slots[0];
}

// The real module closes every session of the application (as a token that was pulled and put back, or an HSM
// that failed over, does): the login goes with them. The signer notices, logs in again and signs on.
TEST_P(Pkcs11SignerTest, TokenThatClosedEverySessionIsLoggedInAgain) {
  auto uri = ParsePkcs11Uri(ca_.key_uri);
  auto signer = Pkcs11Signer::Create(module_, *uri, *pin_, X509_get0_pubkey(cert_.get()), 2);
  ASSERT_TRUE(signer.ok()) << signer.status();
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) threads.emplace_back([&] { EXPECT_TRUE((*signer)->Sign("warm").ok()); });
  for (auto& t : threads) t.join();

  CK_FUNCTION_LIST_PTR f = module_->functions();
  ASSERT_EQ(f->C_CloseAllSessions(TokenSlot(f)), CKR_OK);
  for (int i = 0; i < 3; ++i) {
    std::string msg = "after every session closed " + std::to_string(i);
    auto sig = (*signer)->Sign(msg);
    ASSERT_TRUE(sig.ok()) << sig.status();
    EXPECT_TRUE(Verifies(msg, *sig, (*signer)->algorithm()));
  }
  EXPECT_LE((*signer)->open_sessions(), 2);

  // An explicit logout of the application, from another session: logged in again as well.
  CK_SESSION_HANDLE other;
  ASSERT_EQ(f->C_OpenSession(TokenSlot(f), CKF_SERIAL_SESSION, nullptr, nullptr, &other), CKR_OK);
  ASSERT_EQ(f->C_Logout(other), CKR_OK);
  f->C_CloseSession(other);
  auto sig = (*signer)->Sign("after a logout");
  ASSERT_TRUE(sig.ok()) << sig.status();
  EXPECT_TRUE(Verifies("after a logout", *sig, (*signer)->algorithm()));
}

// When logging in again fails (here the PIN was changed behind the server's back), the signature fails with
// Unavailable naming why, and neither PIN appears in the message.
TEST_P(Pkcs11SignerTest, FailedLoginAgainIsUnavailableWithTheReason) {
  auto uri = ParsePkcs11Uri(ca_.key_uri);
  auto signer = Pkcs11Signer::Create(module_, *uri, *pin_, X509_get0_pubkey(cert_.get()), 2);
  ASSERT_TRUE(signer.ok()) << signer.status();
  CK_FUNCTION_LIST_PTR f = module_->functions();
  CK_SESSION_HANDLE s;
  ASSERT_EQ(f->C_OpenSession(TokenSlot(f), CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &s), CKR_OK);
  std::string old_pin = pin_->value(), new_pin = "changed-pin-4711";
  auto utf8 = [](std::string& v) { return reinterpret_cast<CK_UTF8CHAR_PTR>(v.data()); };
  ASSERT_EQ(f->C_SetPIN(s, utf8(old_pin), old_pin.size(), utf8(new_pin), new_pin.size()), CKR_OK);
  ASSERT_EQ(f->C_CloseAllSessions(TokenSlot(f)), CKR_OK);

  auto sig = (*signer)->Sign("with the wrong PIN");
  ASSERT_FALSE(sig.ok());
  EXPECT_EQ(sig.status().code(), absl::StatusCode::kUnavailable) << sig.status();
  std::string msg(sig.status().message());
  EXPECT_THAT(msg, ::testing::HasSubstr("logging in again failed: login to token linesign failed: "
                                        "CKR_PIN_INCORRECT (wrong PIN)"));
  EXPECT_THAT(msg, ::testing::Not(::testing::HasSubstr(old_pin)));
  EXPECT_THAT(msg, ::testing::Not(::testing::HasSubstr(new_pin)));
}

// CountSessionKeys counts the private keys that are session objects (CKA_TOKEN false) the application sees,
// through a session of its own (session objects are visible to every session of the application).
int CountSessionKeys(CK_FUNCTION_LIST_PTR f, CK_SLOT_ID slot) {
  CK_SESSION_HANDLE s;
  EXPECT_EQ(f->C_OpenSession(slot, CKF_SERIAL_SESSION, nullptr, nullptr, &s), CKR_OK);
  CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
  CK_BBOOL no = CK_FALSE;
  CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_TOKEN, &no, sizeof(no)}};
  EXPECT_EQ(f->C_FindObjectsInit(s, tmpl, 2), CKR_OK);
  CK_OBJECT_HANDLE found[64];
  CK_ULONG n = 0;
  EXPECT_EQ(f->C_FindObjects(s, found, 64, &n), CKR_OK);
  f->C_FindObjectsFinal(s);
  f->C_CloseSession(s);
  return static_cast<int>(n);
}

// hsm.session_key_copy: each session signs with its own session-object copy of the key (one copy per open
// session, gone with the signer's sessions), and the signatures verify with the CA certificate.
TEST_P(Pkcs11SignerTest, SessionKeyCopySignsWithOneCheckedCopyPerSession) {
  auto uri = ParsePkcs11Uri(ca_.key_uri);
  ASSERT_TRUE(uri.ok());
  CK_FUNCTION_LIST_PTR f = module_->functions();
  const CK_SLOT_ID slot = TokenSlot(f);
  // A session of the test's own keeps the application's login alive after the signer is gone.
  CK_SESSION_HANDLE keep;
  ASSERT_EQ(f->C_OpenSession(slot, CKF_SERIAL_SESSION, nullptr, nullptr, &keep), CKR_OK);
  {
    auto signer = Pkcs11Signer::Create(module_, *uri, *pin_, X509_get0_pubkey(cert_.get()), 2, true);
    ASSERT_TRUE(signer.ok()) << signer.status();
    std::atomic<int> good{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 10; ++i) {
          std::string msg = "copy-" + std::to_string(t) + "-" + std::to_string(i);
          auto sig = (*signer)->Sign(msg);
          if (sig.ok() && Verifies(msg, *sig, (*signer)->algorithm())) ++good;
        }
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(good.load(), 40);
    EXPECT_GE((*signer)->open_sessions(), 1);
    EXPECT_EQ(CountSessionKeys(f, slot), (*signer)->open_sessions());
  }
  EXPECT_EQ(CountSessionKeys(f, slot), 0);
  f->C_CloseSession(keep);
}

// Failure injection for the copy: C_CopyObject refused, or a copy that reads back extractable.
CK_FUNCTION_LIST g_copy_wrapped;
CK_C_GetAttributeValue g_real_get_attribute = nullptr;
CK_RV ExtractableCopy(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t, CK_ULONG n) {
  CK_RV rv = g_real_get_attribute(s, o, t, n);
  for (CK_ULONG i = 0; i < n; ++i) {
    if (t[i].type == CKA_EXTRACTABLE && t[i].pValue != nullptr) *static_cast<CK_BBOOL*>(t[i].pValue) = CK_TRUE;
  }
  return rv;
}
CK_RV RefusedCopy(CK_SESSION_HANDLE, CK_OBJECT_HANDLE, CK_ATTRIBUTE_PTR, CK_ULONG, CK_OBJECT_HANDLE_PTR) {
  return CKR_ACTION_PROHIBITED;
}

// A module that makes a weaker copy, or none, is refused at Create with a message naming the setting and what
// was wrong; no weaker copy is left behind and nothing falls back silently to the token key.
TEST_P(Pkcs11SignerTest, SessionKeyCopyRefusesAWeakerCopyOrAModuleThatWillNotCopy) {
  auto uri = ParsePkcs11Uri(ca_.key_uri);
  ASSERT_TRUE(uri.ok());
  g_copy_wrapped = *module_->functions();
  g_real_get_attribute = g_copy_wrapped.C_GetAttributeValue;
  g_copy_wrapped.C_GetAttributeValue = ExtractableCopy;
  auto wrapped = Pkcs11Module::ForFunctionList(&g_copy_wrapped, "wrapped");
  auto weaker = Pkcs11Signer::Create(wrapped, *uri, *pin_, X509_get0_pubkey(cert_.get()), 2, true);
  ASSERT_FALSE(weaker.ok());
  EXPECT_EQ(weaker.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(weaker.status().message()),
              ::testing::HasSubstr("hsm.session_key_copy: refusing the session copy of the key"));
  EXPECT_THAT(std::string(weaker.status().message()), ::testing::HasSubstr("CKA_EXTRACTABLE true"));

  g_copy_wrapped = *module_->functions();
  g_copy_wrapped.C_CopyObject = RefusedCopy;
  auto refused = Pkcs11Signer::Create(wrapped, *uri, *pin_, X509_get0_pubkey(cert_.get()), 2, true);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()),
              ::testing::HasSubstr("hsm.session_key_copy: the module did not copy the key"));
  EXPECT_THAT(std::string(refused.status().message()), ::testing::HasSubstr("CKR_ACTION_PROHIBITED"));
}

INSTANTIATE_TEST_SUITE_P(CaKeys, Pkcs11SignerTest, ::testing::Values("ec-p256", "ec-p384", "rsa-2048"),
                         [](const auto& info) { return std::string(info.param == "ec-p256"   ? "EcP256"
                                                                   : info.param == "ec-p384" ? "EcP384"
                                                                                             : "Rsa2048"); });

}  // namespace
}  // namespace linesign::hsm
