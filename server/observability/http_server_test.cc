#include "server/observability/http_server.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/numbers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace linesign::observability {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<HttpServer> StartLoopback() {
  HttpServer::Options o;
  o.listen = "127.0.0.1:0";
  auto s = HttpServer::Start(o);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *std::move(s) : nullptr;
}

int Port(const HttpServer& s) {
  int port = 0;
  EXPECT_TRUE(absl::SimpleAtoi(s.address().substr(s.address().rfind(':') + 1), &port));
  return port;
}

TEST(HttpServerTest, ServesMountedPagesAndNothingElse) {
  auto s = StartLoopback();
  ASSERT_NE(s, nullptr);
  s->Handle("/x", [](const HttpRequest& r) {
    return HttpResponse{.body = "x " + (r.params.count("a") ? r.params.find("a")->second : std::string())};
  });
  httplib::Client c("127.0.0.1", Port(*s));
  auto r = c.Get("/x?a=1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "x 1");
  EXPECT_EQ(r->get_header_value("X-Content-Type-Options"), "nosniff");
  r = c.Get("/y");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  r = c.Post("/x", "", "text/plain");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405);
  // Mounted while serving (the CRL's page comes later than the listener).
  s->Handle("/later", [](const HttpRequest&) { return HttpResponse{.status = 503, .body = "later"}; });
  r = c.Get("/later");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
}

// A header line past httplib's 8 KiB limit is refused without being kept, and the server goes on serving.
TEST(HttpServerTest, HugeHeaderIsRefusedAndTheServerKeepsServing) {
  auto s = StartLoopback();
  ASSERT_NE(s, nullptr);
  s->Handle("/ok", [](const HttpRequest&) { return HttpResponse{.body = "ok"}; });
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(Port(*s)));
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  std::string req = "GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(64 * 1024, 'a') + "\r\n\r\n";
  (void)!send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  char buf[4096];
  ssize_t n = recv(fd, buf, sizeof(buf), 0);
  std::string answer(buf, n > 0 ? static_cast<size_t>(n) : 0);
  close(fd);
  EXPECT_THAT(answer, ::testing::Not(HasSubstr("200 OK"))) << answer;
  httplib::Client c("127.0.0.1", Port(*s));
  auto r = c.Get("/ok");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST(HttpServerTest, AnAddressInUseIsRefusedWithTheAddress) {
  auto first = StartLoopback();
  ASSERT_NE(first, nullptr);
  HttpServer::Options o;
  o.listen = first->address();
  auto second = HttpServer::Start(o);
  ASSERT_FALSE(second.ok());
  EXPECT_THAT(second.status().message(), HasSubstr(first->address()));
}

}  // namespace
}  // namespace linesign::observability
