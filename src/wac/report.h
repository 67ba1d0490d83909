// wac reports: the table for people and the JSON of DESIGN.md section 4
// ({"runs":[...]}) for tools.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "wac/wac.h"

namespace stablecache::wac {

nlohmann::json RunToJson(const WacRun& run);
std::string RunsTable(const std::vector<WacRun>& runs);

}  // namespace stablecache::wac
