// WriteOutput: how the linesign command line writes a certificate, chain, key or CSR to the path the user named,
// without ever replacing something that is not an ordinary file.
#ifndef LINESIGN_CLIENT_OUTPUT_H_
#define LINESIGN_CLIENT_OUTPUT_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace linesign::client {

// WriteOutput writes `data` to `path`:
//  - "-": standard output.
//  - a symbolic link (or a chain of them) is followed to its target; the link itself is left alone. A dangling
//    link creates its target, provided the target's directory exists.
//  - a regular file, or nothing yet: written whole to a new temporary file in the same directory, synced, and
//    renamed over the path, so a reader sees the old content or the new one, never a part. The file keeps the
//    existing file's mode and (as far as the caller may) owner and group; a new file gets `new_file_mode`. When
//    `new_file_mode` gives group and others nothing (a private key), neither does the result, whatever the old
//    file's mode was.
//  - anything else that exists (a FIFO, a character or block device, a path under /proc/*/fd or /dev/fd, such as
//    /dev/stdout): opened for writing and written in place, never replaced. A /proc or /dev/fd path is opened
//    for appending, as a shell's `>` or `>>` left it.
//  - a directory: InvalidArgument, nothing written.
// Errors name the path (and the resolved target) and the system's reason.
absl::Status WriteOutput(const std::string& path, absl::string_view data, int new_file_mode = 0644);

}  // namespace linesign::client

#endif  // LINESIGN_CLIENT_OUTPUT_H_
