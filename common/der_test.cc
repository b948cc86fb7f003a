#include "common/der.h"

#include <openssl/asn1.h>
#include <openssl/objects.h>

#include "absl/time/time.h"
#include "common/openssl_util.h"
#include "gtest/gtest.h"

namespace linesign::der {
namespace {

TEST(DerTest, LengthsAreMinimal) {
  EXPECT_EQ(Hex(Tlv(kOctetString, std::string(3, 'a'))), "0403616161");
  std::string long_content(200, 'x');
  EXPECT_EQ(Hex(Tlv(kOctetString, long_content).substr(0, 3)), "0481C8");
  std::string longer(0x1234, 'x');
  EXPECT_EQ(Hex(Tlv(kOctetString, longer).substr(0, 4)), "04821234");
}

TEST(DerTest, IntegersArePositiveAndMinimal) {
  EXPECT_EQ(Hex(UnsignedInteger(std::string("\x00\x00\x7f", 3))), "02017F");
  EXPECT_EQ(Hex(UnsignedInteger(std::string("\x80", 1))), "02020080");
  EXPECT_EQ(Hex(UnsignedInteger(std::string("\x00", 1))), "020100");
  EXPECT_EQ(Hex(SmallInteger(65537)), "0203010001");
}

TEST(DerTest, OidMatchesOpenSsl) {
  for (const char* dotted : {"2.5.29.19", "1.2.840.10045.4.3.2", "1.3.6.1.5.5.7.3.2", "1.2.840.113549.1.1.11"}) {
    ASN1_OBJECT* obj = OBJ_txt2obj(dotted, 1);
    ASSERT_NE(obj, nullptr);
    unsigned char* buf = nullptr;
    int n = i2d_ASN1_OBJECT(obj, &buf);
    std::string expected(reinterpret_cast<char*>(buf), n);
    OPENSSL_free(buf);
    ASN1_OBJECT_free(obj);
    EXPECT_EQ(Hex(Oid(dotted)), Hex(expected)) << dotted;
  }
  EXPECT_EQ(Oid("3.1"), "");
  EXPECT_EQ(Oid("1"), "");
  EXPECT_EQ(Oid("1.x.3"), "");
}

TEST(DerTest, TimeSwitchesToGeneralizedTimeIn2050) {
  absl::Time t2049 = absl::FromCivil(absl::CivilSecond(2049, 12, 31, 23, 59, 59), absl::UTCTimeZone());
  absl::Time t2050 = absl::FromCivil(absl::CivilSecond(2050, 1, 1, 0, 0, 0), absl::UTCTimeZone());
  EXPECT_EQ(Time(t2049), Tlv(kUtcTime, "491231235959Z"));
  EXPECT_EQ(Time(t2050), Tlv(kGeneralizedTime, "20500101000000Z"));
}

TEST(DerReaderTest, RejectsIndefiniteNonMinimalAndTruncated) {
  uint8_t tag;
  absl::string_view content;
  {
    const std::string input = std::string("\x30\x80\x00\x00", 4);
    Reader r(input);
    EXPECT_FALSE(r.Next(&tag, &content));
    EXPECT_FALSE(r.ok());
  }
  {
    const std::string input = std::string("\x04\x81\x05hello", 8);
    Reader r(input);  // length 5 must use the short form
    EXPECT_FALSE(r.Next(&tag, &content));
    EXPECT_FALSE(r.ok());
  }
  {
    const std::string input = std::string("\x04\x06hello", 7);
    Reader r(input);
    EXPECT_FALSE(r.Next(&tag, &content));
    EXPECT_FALSE(r.ok());
  }
  {
    const std::string input = std::string("\x04\x05hello\x05\x00", 9);
    Reader r(input);
    ASSERT_TRUE(r.Expect(kOctetString, &content));
    EXPECT_EQ(content, "hello");
    ASSERT_TRUE(r.Expect(kNull, &content));
    EXPECT_TRUE(r.empty());
    EXPECT_TRUE(r.ok());
  }
}

}  // namespace
}  // namespace linesign::der
