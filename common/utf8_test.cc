#include "common/utf8.h"

#include "gtest/gtest.h"

namespace linesign {
namespace {

TEST(Utf8Test, ValidatesShortestFormsOnly) {
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("Gr\xC3\xBC\xC3\x9F" "e \xF0\x9F\x94\x92"));
  EXPECT_FALSE(IsValidUtf8("\xFF"));
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));          // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xE2\x82"));          // truncated
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_EQ(FirstInvalidUtf8("ab\xC3\xBC\xFFz"), 4u);
  EXPECT_EQ(FirstInvalidUtf8("ok"), 2u);
}

TEST(Utf8Test, ToValidUtf8KeepsValidTextAndEscapesEveryInvalidByte) {
  EXPECT_EQ(ToValidUtf8("a\\b \xC3\xBC"), "a\\b \xC3\xBC");
  EXPECT_EQ(ToValidUtf8("x\xFFy\xC3\xBC\xE2\x82"), "x\\xFFy\xC3\xBC\\xE2\\x82");
  EXPECT_TRUE(IsValidUtf8(ToValidUtf8("\x80\x81\xC0\xAF\xED\xA0\x80")));
}

TEST(Utf8Test, QuoteForDisplayCannotForgeAnotherLineOrField) {
  EXPECT_EQ(QuoteForDisplay("a.example"), "\"a.example\"");
  EXPECT_EQ(QuoteForDisplay("a,IP Address:10.6.6.6"), "\"a,IP Address:10.6.6.6\"");
  EXPECT_EQ(QuoteForDisplay("x\nprofile:    server"), "\"x\\nprofile:    server\"");
  EXPECT_EQ(QuoteForDisplay("q\"\\\r\t\x01\x7f"), "\"q\\\"\\\\\\r\\t\\x01\\x7F\"");
  EXPECT_EQ(QuoteForDisplay("\xFF"), "\"\\xFF\"");
  EXPECT_EQ(QuoteForDisplay("\\xFF"), "\"\\\\xFF\"");  // a literal backslash sequence stays distinguishable
  EXPECT_EQ(QuoteForDisplay("\xC2\x85|\xE2\x80\xA8|\xE2\x80\xAE"), "\"\\u{0085}|\\u{2028}|\\u{202E}\"");
  EXPECT_EQ(QuoteForDisplay("Gr\xC3\xBC\xC3\x9F" "e"), "\"Gr\xC3\xBC\xC3\x9F" "e\"");
  std::string all;
  for (int c = 0; c < 256; ++c) all.push_back(static_cast<char>(c));
  std::string quoted = QuoteForDisplay(all);
  EXPECT_TRUE(IsValidUtf8(quoted));
  for (char c : quoted) EXPECT_FALSE(static_cast<unsigned char>(c) < 0x20 || c == 0x7f) << quoted;
}

TEST(Utf8Test, QuoteForDisplayUnlessPlainQuotesAnythingUnusual) {
  EXPECT_EQ(QuoteForDisplayUnlessPlain("IP Address"), "IP Address");
  EXPECT_EQ(QuoteForDisplayUnlessPlain("DNS"), "DNS");
  EXPECT_EQ(QuoteForDisplayUnlessPlain(""), "\"\"");
  EXPECT_EQ(QuoteForDisplayUnlessPlain("a:b"), "\"a:b\"");
  EXPECT_EQ(QuoteForDisplayUnlessPlain("a\nb"), "\"a\\nb\"");
}

}  // namespace
}  // namespace linesign
