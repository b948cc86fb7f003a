#include "client/output.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "common/openssl_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/test_ca.h"

namespace linesign::client {
namespace {

using ::testing::HasSubstr;

struct stat Lstat(const std::string& path) {
  struct stat st = {};
  EXPECT_EQ(lstat(path.c_str(), &st), 0) << path;
  return st;
}

// Entries returns the names in `dir` (no stray temporary files may be left).
std::vector<std::string> Entries(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return {"(cannot open " + dir + ")"};
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") out.push_back(name);
  }
  closedir(d);
  return out;
}

class WriteOutputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir("output");
    old_umask_ = umask(022);
  }
  void TearDown() override { umask(old_umask_); }
  std::string dir_;
  mode_t old_umask_;
};

TEST_F(WriteOutputTest, NewRegularFileGetsTheGivenMode) {
  ASSERT_TRUE(WriteOutput(dir_ + "/cert.pem", "CERT").ok());
  EXPECT_EQ(*ReadFile(dir_ + "/cert.pem"), "CERT");
  EXPECT_EQ(Lstat(dir_ + "/cert.pem").st_mode & 07777, 0644u);
  ASSERT_TRUE(WriteOutput(dir_ + "/key.pem", "KEY", 0600).ok());
  EXPECT_EQ(Lstat(dir_ + "/key.pem").st_mode & 07777, 0600u);
  EXPECT_THAT(Entries(dir_), ::testing::UnorderedElementsAre("cert.pem", "key.pem"));
}

TEST_F(WriteOutputTest, ExistingRegularFileIsReplacedAndKeepsItsMode) {
  ASSERT_TRUE(WriteFile(dir_ + "/cert.pem", "OLD CONTENT THAT IS LONGER", 0640).ok());
  ASSERT_EQ(chmod((dir_ + "/cert.pem").c_str(), 0640), 0);
  ASSERT_TRUE(WriteOutput(dir_ + "/cert.pem", "NEW").ok());
  EXPECT_EQ(*ReadFile(dir_ + "/cert.pem"), "NEW");
  EXPECT_EQ(Lstat(dir_ + "/cert.pem").st_mode & 07777, 0640u);
  // A private key never stays readable by others, whatever the old file allowed.
  ASSERT_TRUE(WriteFile(dir_ + "/key.pem", "OLD", 0644).ok());
  ASSERT_EQ(chmod((dir_ + "/key.pem").c_str(), 0644), 0);
  ASSERT_TRUE(WriteOutput(dir_ + "/key.pem", "KEY", 0600).ok());
  EXPECT_EQ(Lstat(dir_ + "/key.pem").st_mode & 07777, 0600u);
  EXPECT_THAT(Entries(dir_), ::testing::UnorderedElementsAre("cert.pem", "key.pem"));
}

// A symlinked certificate path (/etc/... -> /srv/...): the target is updated, the link stays a link. The old
// code renamed a new file over the link, leaving the target stale.
TEST_F(WriteOutputTest, SymlinkIsFollowedAndKept) {
  ASSERT_EQ(mkdir((dir_ + "/real").c_str(), 0755), 0);
  ASSERT_TRUE(WriteFile(dir_ + "/real/cert.pem", "OLD", 0644).ok());
  ASSERT_EQ(symlink("real/cert.pem", (dir_ + "/link.pem").c_str()), 0);
  ASSERT_EQ(symlink((dir_ + "/link.pem").c_str(), (dir_ + "/link2.pem").c_str()), 0);  // a chain of two
  ASSERT_TRUE(WriteOutput(dir_ + "/link2.pem", "NEW").ok());
  EXPECT_TRUE(S_ISLNK(Lstat(dir_ + "/link.pem").st_mode));
  EXPECT_TRUE(S_ISLNK(Lstat(dir_ + "/link2.pem").st_mode));
  EXPECT_EQ(*ReadFile(dir_ + "/real/cert.pem"), "NEW");
  EXPECT_THAT(Entries(dir_ + "/real"), ::testing::ElementsAre("cert.pem"));
}

TEST_F(WriteOutputTest, DanglingSymlinkCreatesItsTargetOrSaysWhy) {
  ASSERT_EQ(symlink("new.pem", (dir_ + "/link.pem").c_str()), 0);
  ASSERT_TRUE(WriteOutput(dir_ + "/link.pem", "NEW").ok());
  EXPECT_TRUE(S_ISLNK(Lstat(dir_ + "/link.pem").st_mode));
  EXPECT_EQ(*ReadFile(dir_ + "/new.pem"), "NEW");
  ASSERT_EQ(symlink((dir_ + "/no-such-dir/x.pem").c_str(), (dir_ + "/bad.pem").c_str()), 0);
  absl::Status st = WriteOutput(dir_ + "/bad.pem", "NEW");
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(std::string(st.message()), HasSubstr("no-such-dir/x.pem"));
  EXPECT_THAT(std::string(st.message()), HasSubstr("(the target of " + dir_ + "/bad.pem)"));
}

// A FIFO is written to and stays a FIFO (the old code renamed a regular file over it).
TEST_F(WriteOutputTest, FifoIsWrittenInPlace) {
  std::string fifo = dir_ + "/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  std::string received;
  std::thread reader([&] {
    int fd = open(fifo.c_str(), O_RDONLY);
    char buf[256];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) received.append(buf, n);
    close(fd);
  });
  absl::Status st = WriteOutput(fifo, "THROUGH THE PIPE");
  reader.join();
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(received, "THROUGH THE PIPE");
  EXPECT_TRUE(S_ISFIFO(Lstat(fifo).st_mode));
  EXPECT_THAT(Entries(dir_), ::testing::ElementsAre("fifo"));
}

// A symlink to a FIFO (as /dev/stdout is a symlink to the process's descriptor) is written through.
TEST_F(WriteOutputTest, SymlinkToFifoIsWrittenInPlace) {
  std::string fifo = dir_ + "/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  ASSERT_EQ(symlink(fifo.c_str(), (dir_ + "/out").c_str()), 0);
  std::string received;
  std::thread reader([&] {
    int fd = open(fifo.c_str(), O_RDONLY);
    char buf[256];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) received.append(buf, n);
    close(fd);
  });
  absl::Status st = WriteOutput(dir_ + "/out", "VIA LINK");
  reader.join();
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(received, "VIA LINK");
  EXPECT_TRUE(S_ISLNK(Lstat(dir_ + "/out").st_mode));
  EXPECT_TRUE(S_ISFIFO(Lstat(fifo).st_mode));
}

// A /proc/self/fd path (where /dev/stdout leads) names an open descriptor: written in place, appending, so the
// file the descriptor is open on is the one that gets the data (never a renamed-over copy).
TEST_F(WriteOutputTest, DescriptorPathIsWrittenInPlace) {
  std::string file = dir_ + "/redirected";
  int fd = open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "before;", 7), 7);
  ino_t inode = Lstat(file).st_ino;
  ASSERT_TRUE(WriteOutput(absl::StrCat("/proc/self/fd/", fd), "CERT").ok());
  close(fd);
  EXPECT_EQ(*ReadFile(file), "before;CERT");
  EXPECT_EQ(Lstat(file).st_ino, inode);
  EXPECT_THAT(Entries(dir_), ::testing::ElementsAre("redirected"));
}

TEST_F(WriteOutputTest, DashIsStandardOutput) {
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  fflush(stdout);
  int saved = dup(STDOUT_FILENO);
  dup2(pipe_fds[1], STDOUT_FILENO);
  absl::Status st = WriteOutput("-", "TO STDOUT");
  dup2(saved, STDOUT_FILENO);
  close(saved);
  close(pipe_fds[1]);
  std::string received;
  char buf[256];
  ssize_t n;
  while ((n = read(pipe_fds[0], buf, sizeof(buf))) > 0) received.append(buf, n);
  close(pipe_fds[0]);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(received, "TO STDOUT");
  EXPECT_TRUE(Entries(dir_).empty());
}

TEST_F(WriteOutputTest, DirectoryIsRefused) {
  ASSERT_EQ(mkdir((dir_ + "/d").c_str(), 0755), 0);
  absl::Status st = WriteOutput(dir_ + "/d", "X");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("is a directory"));
  EXPECT_TRUE(S_ISDIR(Lstat(dir_ + "/d").st_mode));
  EXPECT_TRUE(Entries(dir_ + "/d").empty());
  EXPECT_THAT(Entries(dir_), ::testing::ElementsAre("d"));
}

// A character device would be written in place like the FIFO above; it is not tested here because the only safe
// way to get one (mknod) needs privileges a test must not assume, and the real /dev/null or /dev/zero must never
// be a test's target.

}  // namespace
}  // namespace linesign::client
