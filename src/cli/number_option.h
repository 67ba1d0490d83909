// Numeric CLI options whose errors say what was wrong: "'abc' is not a
// number", "'2.5' is not a whole number", "5000 is out of range (1 to
// 4096)". CLI11's own Range validator reports a word as out of range
// 0 to 1.79769e+308, which misleads; these run before its conversion.
#pragma once

#include <charconv>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

namespace stablecache::cli {

template <typename T>
CLI::Validator NumberIn(T min, T max) {
  static_assert(std::is_arithmetic_v<T>);
  auto check = [min, max](std::string& text) -> std::string {
    T v{};
    const char* first = text.data();
    const char* last = text.data() + text.size();
    std::from_chars_result r{};
    if constexpr (std::is_floating_point_v<T>) r = std::from_chars(first, last, v, std::chars_format::general);
    else r = std::from_chars(first, last, v);
    if (r.ec == std::errc::result_out_of_range) return fmt::format("'{}' is out of range ({} to {})", text, min, max);
    if (r.ec != std::errc() || r.ptr != last || text.empty()) {
      if constexpr (std::is_integral_v<T>) {
        double d = 0;
        auto rd = std::from_chars(first, last, d);
        if (rd.ec == std::errc() && rd.ptr == last && !text.empty()) {
          if (text[0] == '-' && d == std::floor(d))  // "-3" for an unsigned
            return fmt::format("'{}' is out of range ({} to {})", text, min, max);
          return fmt::format("'{}' is not a whole number (digits only)", text);
        }
      }
      return fmt::format("'{}' is not a number", text);
    }
    if constexpr (std::is_floating_point_v<T>)
      if (!std::isfinite(v)) return fmt::format("'{}' is not a finite number", text);
    if (v < min || v > max) return fmt::format("{} is out of range ({} to {})", text, min, max);
    return {};
  };
  return CLI::Validator(check, fmt::format("NUMBER in [{} - {}]", min, max), "NumberIn");
}

// A number of seconds above 0 (and below a year, so deadlines stay finite).
inline CLI::Validator Seconds() {
  auto range = NumberIn<double>(0, 365.0 * 24 * 3600);
  auto check = [range](std::string& text) -> std::string {
    std::string err = range(text);
    if (!err.empty()) return err;
    if (std::strtod(text.c_str(), nullptr) <= 0) return fmt::format("{} must be above 0 seconds", text);
    return {};
  };
  return CLI::Validator(check, "SECONDS > 0", "Seconds");
}

}  // namespace stablecache::cli
