// Errors as values. A Status is cheap when ok; errors carry a code and a message
// meant for an operator. errno is turned into a Status in one place: ErrnoStatus().
#pragma once

#include <cerrno>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace agile {

enum class Code {
  kOk = 0,
  kInvalidArgument,
  kNotFound,
  kAlreadyExists,
  kUnavailable,      // peer or resource unreachable; may succeed later
  kCorruption,       // malformed data on the wire or on disk
  kPermissionDenied, // e.g. not the owner of a VM's pages
  kResourceExhausted,
  kUnsupported,      // kernel or peer lacks a feature
  kInternal,
  kNoSpace,          // the disk under a store is full (ENOSPC, EDQUOT)
};
// The last code: loops over every code (e.g. parsing a CodeName) end here.
inline constexpr Code kLastCode = Code::kNoSpace;

const char* CodeName(Code c);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string msg) : code_(code), msg_(std::move(msg)) {}

  static Status Ok() { return {}; }
  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return msg_; }
  std::string ToString() const;

  // Prefixes the message with context: "open ram file: No such file".
  Status Annotate(const std::string& context) const;

 private:
  Code code_ = Code::kOk;
  std::string msg_;
};

inline Status InvalidArgument(std::string m) { return {Code::kInvalidArgument, std::move(m)}; }
inline Status NotFound(std::string m) { return {Code::kNotFound, std::move(m)}; }
inline Status AlreadyExists(std::string m) { return {Code::kAlreadyExists, std::move(m)}; }
inline Status Unavailable(std::string m) { return {Code::kUnavailable, std::move(m)}; }
inline Status Corruption(std::string m) { return {Code::kCorruption, std::move(m)}; }
inline Status PermissionDenied(std::string m) { return {Code::kPermissionDenied, std::move(m)}; }
inline Status ResourceExhausted(std::string m) { return {Code::kResourceExhausted, std::move(m)}; }
inline Status Unsupported(std::string m) { return {Code::kUnsupported, std::move(m)}; }
inline Status Internal(std::string m) { return {Code::kInternal, std::move(m)}; }
inline Status NoSpace(std::string m) { return {Code::kNoSpace, std::move(m)}; }

// The one place errno becomes a Status: "<what>: <strerror>".
Status ErrnoStatus(const std::string& what, int err = errno);

// Result<T>: a value or an error Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}           // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}    // NOLINT: implicit by design

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace agile

// Early return on error, for Status and Result expressions.
#define AGILE_RETURN_IF_ERROR(expr)         \
  do {                                      \
    ::agile::Status _st = (expr);           \
    if (!_st.ok()) return _st;              \
  } while (0)

#define AGILE_CONCAT_INNER(a, b) a##b
#define AGILE_CONCAT(a, b) AGILE_CONCAT_INNER(a, b)
#define AGILE_ASSIGN_OR_RETURN(lhs, expr) \
  AGILE_ASSIGN_OR_RETURN_IMPL(AGILE_CONCAT(_res_, __LINE__), lhs, expr)
#define AGILE_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()
