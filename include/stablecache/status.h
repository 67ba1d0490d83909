// Status and Result<T>: how every stablecache operation reports failure.
//
// Errors are values. A Status carries a code, the errno it came from (if
// any) and a message that names what was wrong. Result<T> is
// tl::expected<T, Status>. No exception is thrown on the I/O path.
// Status is a plain value type; it is safe to copy between threads.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <tl/expected.hpp>

namespace stablecache {

enum class Code : uint8_t {
  kOk = 0,
  kInvalidArgument,  // bad offset, size, alignment, option or spec
  kOutOfRange,       // beyond the device or file limits
  kNoSpace,          // a device or the cache is full
  kIoError,          // the device below failed
  kIntegrityError,   // protection information did not match: data withheld
  kClosed,           // the handle was closed
  kNotSupported,     // this build or kernel cannot do it
  kBusy,             // resource temporarily unavailable
};

class [[nodiscard]] Status {
 public:
  Status() = default;

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string msg) { return Status(Code::kInvalidArgument, std::move(msg)); }
  static Status OutOfRange(std::string msg) { return Status(Code::kOutOfRange, std::move(msg)); }
  static Status NoSpace(std::string msg) { return Status(Code::kNoSpace, std::move(msg)); }
  static Status IoError(std::string msg, int err = 5) { return Status(Code::kIoError, std::move(msg), err); }
  static Status IntegrityError(std::string msg) { return Status(Code::kIntegrityError, std::move(msg), 84 /*EILSEQ*/); }
  static Status Closed(std::string msg) { return Status(Code::kClosed, std::move(msg)); }
  static Status NotSupported(std::string msg) { return Status(Code::kNotSupported, std::move(msg)); }
  // The one place an errno becomes a Status. `what` names the operation.
  static Status FromErrno(int err, std::string_view what);

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  int err() const { return err_; }
  const std::string& message() const { return msg_; }
  std::string ToString() const;

  // The same error with "context: " in front of the message.
  Status WithContext(std::string_view context) const {
    if (ok()) return *this;
    return Status(code_, std::string(context) + ": " + msg_, err_);
  }

  // Keeps the first error: a.Update(b) sets a to b only if a is ok.
  void Update(const Status& other) {
    if (ok() && !other.ok()) *this = other;
  }

 private:
  Status(Code c, std::string msg, int err = 0) : code_(c), err_(err), msg_(std::move(msg)) {}
  Code code_ = Code::kOk;
  int err_ = 0;
  std::string msg_;
};

template <typename T>
using Result = tl::expected<T, Status>;

inline tl::unexpected<Status> Err(Status s) { return tl::unexpected<Status>(std::move(s)); }

const char* CodeName(Code c);

}  // namespace stablecache

#define SC_RETURN_IF_ERROR(expr)            \
  do {                                      \
    ::stablecache::Status _sc_st = (expr);  \
    if (!_sc_st.ok()) return _sc_st;        \
  } while (0)

// The same, in a function that returns Result<T>.
#define SC_RETURN_UNEXPECTED_IF_ERROR(expr)        \
  do {                                             \
    ::stablecache::Status _sc_st = (expr);         \
    if (!_sc_st.ok()) return ::stablecache::Err(_sc_st); \
  } while (0)
