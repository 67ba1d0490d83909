// The parsed form of a stack spec string (grammar in stablecache/stack.h).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "stablecache/status.h"

namespace stablecache {

struct LayerSpec;
using StackSpec = std::vector<LayerSpec>;  // top to bottom

struct LayerSpec {
  std::string name;
  std::string value;  // after ':'; empty if none
  std::vector<std::pair<std::string, std::string>> options;
  std::vector<StackSpec> legs;
  size_t pos = 0;  // offset of the name in the spec, for messages
};

[[nodiscard]] Result<StackSpec> ParseStackSpec(std::string_view spec);

}  // namespace stablecache
