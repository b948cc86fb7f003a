#include "tests/testing/certs.h"

#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sqlite3.h>

#include "client/keygen.h"

namespace linesign::testing {

OsslPtr<X509> ParseDer(const std::string& der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  return OsslPtr<X509>(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
}

std::string VerifyChain(X509* leaf, const std::string& root_pem_path, const std::string& chain_pem_path) {
  OsslPtr<X509_STORE> store(X509_STORE_new());
  if (X509_STORE_load_file(store.get(), root_pem_path.c_str()) != 1) return "cannot load root";
  auto chain_pem = ReadFile(chain_pem_path);
  if (!chain_pem.ok()) return "cannot read chain";
  auto chain = ParseCertificatesPem(*chain_pem, "chain");
  if (!chain.ok()) return "cannot parse chain";
  OsslPtr<STACK_OF(X509)> untrusted(sk_X509_new_null());
  for (auto& c : *chain) sk_X509_push(untrusted.get(), X509_dup(c.get()));
  OsslPtr<X509_STORE_CTX> ctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(ctx.get(), store.get(), leaf, untrusted.get());
  X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_CLIENT);
  if (X509_verify_cert(ctx.get()) == 1) return "";
  return X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()));
}

std::string Csr(const std::string& algorithm, const std::string& subject, const std::vector<std::string>& sans) {
  auto key = client::GenerateKey(algorithm);
  if (!key.ok()) return "";
  auto der = client::MakeCsr(key->get(), subject, sans);
  return der.ok() ? *der : "";
}

std::string CsrWithKeySpec(const std::string& type, const std::string& param, const std::string& subject) {
  EVP_PKEY* key = nullptr;
  if (type == "EC") {
    key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", param.c_str());
  } else {
    key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(std::stoi(param)));
  }
  if (key == nullptr) return "";
  OsslPtr<EVP_PKEY> owned(key);
  auto der = client::MakeCsr(key, subject, {});
  return der.ok() ? *der : "";
}

std::string SqliteScalar(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  std::string out;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW) {
      const auto* t = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
      out = t != nullptr ? t : "";
    }
    sqlite3_finalize(s);
  }
  sqlite3_close(db);
  return out;
}

std::map<std::string, std::string> SqliteMap(const std::string& path, const std::string& sql) {
  std::map<std::string, std::string> out;
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK) {
      auto text = [s](int i) {
        const auto* t = reinterpret_cast<const char*>(sqlite3_column_text(s, i));
        return std::string(t != nullptr ? t : "");
      };
      while (sqlite3_step(s) == SQLITE_ROW) out[text(0)] = text(1);
    }
    sqlite3_finalize(s);
  }
  sqlite3_close(db);
  return out;
}

std::string SqliteExec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  std::string error;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    error = db != nullptr ? sqlite3_errmsg(db) : "cannot open";
  } else {
    sqlite3_busy_timeout(db, 10000);
    char* err = nullptr;
    if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      error = err != nullptr ? err : sqlite3_errmsg(db);
    }
    sqlite3_free(err);
  }
  sqlite3_close(db);
  return error;
}

}  // namespace linesign::testing
