#include "stack/stack_spec.h"

#include <cctype>

#include <fmt/format.h>

namespace stablecache {

namespace {

class Parser {
 public:
  explicit Parser(std::string_view s) : s_(s) {}

  Result<StackSpec> ParseAll() {
    auto stack = ParseStack();
    if (!stack) return stack;
    if (i_ != s_.size()) return Fail(fmt::format("unexpected '{}'", s_[i_]));
    return stack;
  }

 private:
  tl::unexpected<Status> Fail(const std::string& what) const {
    return Err(Status::InvalidArgument(fmt::format("stack spec '{}': {} at position {}", s_, what, i_)));
  }
  bool AtEnd() const { return i_ >= s_.size(); }
  char Peek() const { return AtEnd() ? '\0' : s_[i_]; }
  static bool IsDelim(char c) { return c == ',' || c == '(' || c == ')' || c == '[' || c == ']'; }

  Result<StackSpec> ParseStack() {
    StackSpec out;
    for (;;) {
      auto layer = ParseLayer();
      if (!layer) return Err(layer.error());
      out.push_back(std::move(*layer));
      if (Peek() != ',') return out;
      i_++;
    }
  }

  Result<LayerSpec> ParseLayer() {
    LayerSpec l;
    l.pos = i_;
    while (!AtEnd() && (std::isalnum(static_cast<unsigned char>(Peek())) || Peek() == '_')) l.name += s_[i_++];
    if (l.name.empty()) return Fail(AtEnd() ? "expected a layer name, found the end" : fmt::format("expected a layer name, found '{}'", Peek()));
    if (Peek() == ':') {
      i_++;
      while (!AtEnd() && !IsDelim(Peek())) l.value += s_[i_++];
      if (l.value.empty()) return Fail(fmt::format("'{}:' needs a value", l.name));
    }
    if (Peek() == '(') {
      i_++;
      for (;;) {
        if (Peek() == '[') {
          i_++;
          auto leg = ParseStack();
          if (!leg) return Err(leg.error());
          if (Peek() != ']') return Fail("expected ']' to close a leg");
          i_++;
          l.legs.push_back(std::move(*leg));
        } else if (IsOption()) {
          std::string key, value;
          while (Peek() != '=') key += s_[i_++];
          i_++;
          while (!AtEnd() && Peek() != ',' && Peek() != ')') value += s_[i_++];
          if (value.empty()) return Fail(fmt::format("option '{}' needs a value", key));
          l.options.emplace_back(std::move(key), std::move(value));
        } else {
          auto leg = ParseLayer();
          if (!leg) return Err(leg.error());
          l.legs.push_back(StackSpec{std::move(*leg)});
        }
        if (Peek() == ',') {
          i_++;
          continue;
        }
        if (Peek() == ')') {
          i_++;
          break;
        }
        return Fail(fmt::format("expected ',' or ')' in the arguments of '{}'", l.name));
      }
    }
    return l;
  }

  // key=value: an identifier followed by '='.
  bool IsOption() const {
    size_t j = i_;
    while (j < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[j])) || s_[j] == '_')) j++;
    return j > i_ && j < s_.size() && s_[j] == '=';
  }

  std::string_view s_;
  size_t i_ = 0;
};

}  // namespace

Result<StackSpec> ParseStackSpec(std::string_view spec) {
  if (spec.empty()) return Err(Status::InvalidArgument("stack spec is empty"));
  return Parser(spec).ParseAll();
}

}  // namespace stablecache
