#include "client/iot_job_commands.h"

#include <stdlib.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace linesign::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Write(const std::string& name, const std::string& text) {
  const char* tmp = getenv("TMPDIR");
  std::string path = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/iot-job-", getpid(), "-", name);
  std::ofstream(path) << text;
  return path;
}

// Serials are read as `linesign list` prints them, in any case, blanks and comments skipped, each once,
// normalised as the server keys them (upper case, whole octets, no leading zero octet).
TEST(ReadSerialsFileTest, ReadsNormalisesAndDeduplicates) {
  auto serials = ReadSerialsFile(Write("ok", "# serials\n0a1b2c\n\n  00FF01  \nabc\n0A1B2C\n"));
  ASSERT_TRUE(serials.ok()) << serials.status();
  EXPECT_THAT(*serials, ElementsAre("0A1B2C", "FF01", "0ABC"));
}

// A line that is not a serial is refused by file and line number; nothing is enqueued.
TEST(ReadSerialsFileTest, BadHexIsRefusedByLineNumber) {
  const std::string path = Write("bad", "0A1B\n# fine\n0A1G\n");
  auto serials = ReadSerialsFile(path);
  ASSERT_FALSE(serials.ok());
  EXPECT_EQ(serials.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(serials.status().message(),
            absl::StrCat(path, ":3: \"0A1G\" is not a serial (1 to 42 hexadecimal digits)"));
  auto long_serial = ReadSerialsFile(Write("long", std::string(43, 'a') + "\n"));
  EXPECT_THAT(long_serial.status().message(), HasSubstr(":1: \"" + std::string(43, 'a') + "\" is not a serial"));
  auto long_line = ReadSerialsFile(Write("line", "01\n" + std::string(300, ' ') + "02\n"));
  EXPECT_THAT(long_line.status().message(), HasSubstr(":2: the line is 302 bytes long"));
}

// A file is bounded: more serials than one job takes, or more bytes than it reads, is refused, not truncated.
TEST(ReadSerialsFileTest, HugeFilesAreRefused) {
  std::string many;
  for (int i = 1; i <= kMaxJobSerials + 1; ++i) absl::StrAppend(&many, absl::Hex(i), "\n");
  auto too_many = ReadSerialsFile(Write("many", many));
  ASSERT_FALSE(too_many.ok());
  EXPECT_THAT(too_many.status().message(),
              HasSubstr(absl::StrCat(":", kMaxJobSerials + 1, ": more than ", kMaxJobSerials, " serials")));
  auto too_big = ReadSerialsFile(Write("big", std::string(kMaxSerialsFileBytes + 1, '\n')));
  ASSERT_FALSE(too_big.ok());
  EXPECT_THAT(too_big.status().message(), HasSubstr("bytes, more than the 8388608 a job reads; split it"));
  EXPECT_THAT(ReadSerialsFile(Write("empty", "# nothing\n\n")).status().message(), HasSubstr("lists no serial"));
  EXPECT_EQ(ReadSerialsFile("/nonexistent/serials").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace linesign::client
