#include "stablecache/status.h"

#include <cstring>

#include <fmt/format.h>

namespace stablecache {

Status Status::FromErrno(int err, std::string_view what) {
  Code c = Code::kIoError;
  switch (err) {
    case EINVAL: c = Code::kInvalidArgument; break;
    case ENOSPC: case EDQUOT: c = Code::kNoSpace; break;
    case EOPNOTSUPP: case ENOSYS: c = Code::kNotSupported; break;
    case EBADF: c = Code::kClosed; break;
    case EAGAIN: case EBUSY: c = Code::kBusy; break;
    case EILSEQ: case EBADMSG: c = Code::kIntegrityError; break;
    case ERANGE: case EFBIG: c = Code::kOutOfRange; break;
    default: break;
  }
  return Status(c, fmt::format("{}: {}", what, std::strerror(err)), err);
}

const char* CodeName(Code c) {
  switch (c) {
    case Code::kOk: return "OK";
    case Code::kInvalidArgument: return "invalid argument";
    case Code::kOutOfRange: return "out of range";
    case Code::kNoSpace: return "no space";
    case Code::kIoError: return "I/O error";
    case Code::kIntegrityError: return "integrity error";
    case Code::kClosed: return "closed";
    case Code::kNotSupported: return "not supported";
    case Code::kBusy: return "busy";
  }
  return "unknown";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  return fmt::format("{}: {}", CodeName(code_), msg_);
}

}  // namespace stablecache
