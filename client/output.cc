#include "client/output.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace linesign::client {
namespace {

constexpr int kMaxLinks = 40;  // as the kernel's MAXSYMLINKS

absl::Status Errno(absl::string_view what, const std::string& path, int err) {
  return absl::InternalError(absl::StrCat("cannot ", what, " ", path, ": ", std::strerror(err)));
}

absl::Status WriteAll(int fd, absl::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("write", path, errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

std::string DirName(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// IsFdPath: a path that names one of a process's open file descriptors (/dev/stdout leads here).
bool IsFdPath(const std::string& path) {
  return absl::StartsWith(path, "/dev/fd/") || (absl::StartsWith(path, "/proc/") && absl::StrContains(path, "/fd/"));
}

struct Target {
  std::string path;    // the final path after following symbolic links
  bool exists = false;
  struct stat st = {};
  bool fd_path = false;  // a /proc/*/fd or /dev/fd path: written in place
};

// Resolve follows `path` through symbolic links to what it names (which may not exist yet).
absl::StatusOr<Target> Resolve(const std::string& path) {
  Target t;
  t.path = path;
  for (int hops = 0; hops <= kMaxLinks; ++hops) {
    if (IsFdPath(t.path)) {
      t.fd_path = true;
      t.exists = stat(t.path.c_str(), &t.st) == 0;
      if (!t.exists) return Errno("open", t.path, errno);
      return t;
    }
    if (lstat(t.path.c_str(), &t.st) != 0) {
      if (errno != ENOENT) return Errno("examine", t.path, errno);
      return t;  // a new file
    }
    if (!S_ISLNK(t.st.st_mode)) {
      t.exists = true;
      return t;
    }
    char buf[4096];
    ssize_t n = readlink(t.path.c_str(), buf, sizeof(buf) - 1);
    if (n < 0) return Errno("read the link", t.path, errno);
    std::string link(buf, static_cast<size_t>(n));
    t.path = link[0] == '/' ? link : absl::StrCat(DirName(t.path), "/", link);
  }
  return absl::InvalidArgumentError(absl::StrCat(path, ": too many levels of symbolic links"));
}

absl::Status WriteInPlace(const Target& t, absl::string_view data) {
  // No O_CREAT, no O_TRUNC: a FIFO or a device is written to, never created or replaced.
  int flags = O_WRONLY | O_NOCTTY | O_CLOEXEC | (t.fd_path && S_ISREG(t.st.st_mode) ? O_APPEND : 0);
  int fd = open(t.path.c_str(), flags);
  if (fd < 0) return Errno("open", t.path, errno);
  absl::Status st = WriteAll(fd, data, t.path);
  if (close(fd) != 0 && st.ok()) st = Errno("close", t.path, errno);
  return st;
}

absl::Status ReplaceFile(const Target& t, absl::string_view data, int new_file_mode) {
  mode_t mode = t.exists ? (t.st.st_mode & 07777) : static_cast<mode_t>(new_file_mode);
  if ((new_file_mode & 077) == 0) mode &= ~static_cast<mode_t>(077);  // a secret stays private
  std::string tmp = absl::StrCat(t.path, ".linesign-XXXXXX");
  int fd = mkostemp(tmp.data(), O_CLOEXEC);  // O_EXCL, mode 0600 until fchmod below
  if (fd < 0) return Errno("create a temporary file beside", t.path, errno);
  auto fail = [&](absl::Status st) {
    close(fd);
    unlink(tmp.c_str());
    return st;
  };
  if (absl::Status st = WriteAll(fd, data, tmp); !st.ok()) return fail(st);
  if (t.exists && (t.st.st_uid != geteuid() || t.st.st_gid != getegid())) {
    // Keep the owner and group where allowed (root, or a group of the caller's); otherwise the file is ours.
    if (fchown(fd, t.st.st_uid, t.st.st_gid) != 0 && fchown(fd, static_cast<uid_t>(-1), t.st.st_gid) != 0) {
      // Neither is allowed: the file belongs to the caller, as a new one would.
    }
  }
  if (fchmod(fd, mode) != 0) return fail(Errno("set the mode of", tmp, errno));
  if (fsync(fd) != 0) return fail(Errno("sync", tmp, errno));
  if (close(fd) != 0) {
    int err = errno;
    unlink(tmp.c_str());
    return Errno("close", tmp, err);
  }
  if (rename(tmp.c_str(), t.path.c_str()) != 0) {
    int err = errno;
    unlink(tmp.c_str());
    return Errno("rename the temporary file over", t.path, err);
  }
  // The rename is durable once the directory is synced.
  if (int dir = open(DirName(t.path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dir >= 0) {
    fsync(dir);
    close(dir);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteOutput(const std::string& path, absl::string_view data, int new_file_mode) {
  if (path == "-") return WriteAll(STDOUT_FILENO, data, "standard output");
  if (path.empty()) return absl::InvalidArgumentError("output path is empty (use - for standard output)");
  auto target = Resolve(path);
  if (!target.ok()) return target.status();
  if (target->exists && S_ISDIR(target->st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, target->path != path ? absl::StrCat(" (-> ", target->path, ")") : "", " is a directory; name a file"));
  }
  absl::Status st = target->fd_path || (target->exists && !S_ISREG(target->st.st_mode))
                        ? WriteInPlace(*target, data)
                        : ReplaceFile(*target, data, new_file_mode);
  if (!st.ok() && target->path != path) {
    return absl::Status(st.code(), absl::StrCat(st.message(), " (the target of ", path, ")"));
  }
  return st;
}

}  // namespace linesign::client
