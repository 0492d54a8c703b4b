#include "base/status.h"

namespace agile {

const char* CodeName(Code c) {
  switch (c) {
    case Code::kOk: return "ok";
    case Code::kInvalidArgument: return "invalid-argument";
    case Code::kNotFound: return "not-found";
    case Code::kAlreadyExists: return "already-exists";
    case Code::kUnavailable: return "unavailable";
    case Code::kCorruption: return "corruption";
    case Code::kPermissionDenied: return "permission-denied";
    case Code::kResourceExhausted: return "resource-exhausted";
    case Code::kUnsupported: return "unsupported";
    case Code::kInternal: return "internal";
    case Code::kNoSpace: return "no-space";
  }
  return "unknown";
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  return std::string(CodeName(code_)) + ": " + msg_;
}

Status Status::Annotate(const std::string& context) const {
  if (ok()) return *this;
  return Status(code_, context + ": " + msg_);
}

Status ErrnoStatus(const std::string& what, int err) {
  Code code = Code::kInternal;
  switch (err) {
    case ENOENT: code = Code::kNotFound; break;
    case EEXIST: code = Code::kAlreadyExists; break;
    case EINVAL: code = Code::kInvalidArgument; break;
    case EACCES:
    case EPERM: code = Code::kPermissionDenied; break;
    case ENOMEM: code = Code::kResourceExhausted; break;
    case ENOSPC:
    case EDQUOT: code = Code::kNoSpace; break;
    case ECONNREFUSED:
    case ECONNRESET:
    case EPIPE:
    case ETIMEDOUT:
    case EHOSTUNREACH:
    case ENETUNREACH: code = Code::kUnavailable; break;
    case ENOSYS:
    case EOPNOTSUPP: code = Code::kUnsupported; break;
    default: break;
  }
  return Status(code, what + ": " + std::strerror(err));
}

}  // namespace agile
