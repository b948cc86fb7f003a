// Status propagation helpers. Abseil 20220623 (Debian 12) ships no status macros, so they are defined once here.
#ifndef LINESIGN_COMMON_STATUS_MACROS_H_
#define LINESIGN_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define LINESIGN_CONCAT_INNER_(a, b) a##b
#define LINESIGN_CONCAT_(a, b) LINESIGN_CONCAT_INNER_(a, b)

// LINESIGN_RETURN_IF_ERROR(expr) returns the status of `expr` from the enclosing function when it is not OK.
#define LINESIGN_RETURN_IF_ERROR(expr)                \
  do {                                                \
    ::absl::Status linesign_status_ = (expr);         \
    if (!linesign_status_.ok()) return linesign_status_; \
  } while (0)

// LINESIGN_ASSIGN_OR_RETURN(lhs, expr) evaluates the StatusOr `expr`; on error returns its status, otherwise
// assigns (moves) its value to `lhs`, which may be a declaration.
#define LINESIGN_ASSIGN_OR_RETURN(lhs, expr) \
  LINESIGN_ASSIGN_OR_RETURN_IMPL_(LINESIGN_CONCAT_(linesign_statusor_, __LINE__), lhs, expr)
#define LINESIGN_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                    \
  if (!tmp.ok()) return std::move(tmp).status();        \
  lhs = std::move(tmp).value()

#endif  // LINESIGN_COMMON_STATUS_MACROS_H_
