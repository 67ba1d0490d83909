// The stablecache command line, run as a user would: option errors, the
// wac JSON schema of DESIGN.md section 4, and a short run of every profile
// on both targets.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace stablecache {
namespace {

struct CliResult {
  int exit_code = -1;
  std::string out, err;
};

CliResult RunCli(const std::string& args) {
  testing::TempFile err_file("cli-err");
  std::string cmd = std::string(STABLECACHE_CLI) + " " + args + " 2>" + err_file.path();
  CliResult r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) r.out.append(buf, n);
  int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream e(err_file.path());
  std::stringstream ss;
  ss << e.rdbuf();
  r.err = ss.str();
  return r;
}

void ExpectUsageError(const std::string& args, const std::string& says) {
  CliResult r = RunCli(args);
  EXPECT_NE(r.exit_code, 0) << args;
  EXPECT_NE(r.err.find(says), std::string::npos) << args << "\nstderr: " << r.err;
  EXPECT_TRUE(r.out.empty()) << args << "\nstdout: " << r.out;
}

TEST(Cli, OptionErrorsNameWhatWasWrong) {
  ExpectUsageError("wac --profile A,G", "bad profile 'G'");
  ExpectUsageError("wac --file-size 64Q", "unknown suffix 'Q'");
  ExpectUsageError("wac --file-size 1000 --duration 0.1", "multiple of 4096");
  ExpectUsageError("wac --stack verify,bogus,file --duration 0.1 --profile A", "unknown layer");
  ExpectUsageError("wac --stack 'mirror(memory:1M' --duration 0.1 --profile A", "stack spec");
  ExpectUsageError("wac --target /nonexistent/stablecache-dir --duration 0.1", "is not a directory");
  ExpectUsageError("wac --policy none,sometimes", "sometimes");
  ExpectUsageError("wac --threads 0", "--threads");
  ExpectUsageError("wac --frobnicate", "frobnicate");
}

const char* const kRunFields[] = {"profile",      "policy",    "target",        "stack",        "threads",
                                  "file_size",    "duration_s", "ops",          "ops_per_s",    "bytes_written",
                                  "bytes_bounced", "writer_wait_p99_us", "violations", "verdict"};
const char* const kViolationFields[] = {"modified_in_flight", "integrity_errors", "mirror_divergence",
                                        "parity_mismatch", "readback_mismatch"};

nlohmann::json RunJson(const std::string& args) {
  CliResult r = RunCli(args + " --json");
  EXPECT_EQ(r.exit_code, 0) << args << "\n" << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << "not JSON: " << r.out;
  return j;
}

TEST(Cli, WacJsonHasTheFieldsOtherToolsParse) {
  // A delay under integrity widens the window between checksum and copy,
  // so policy none is caught with certainty even in a short run.
  nlohmann::json j = RunJson(
      "wac --profile A --policy none,fork --duration 1 --threads 8 --stack 'verify,integrity,delay(us=200),file'");
  ASSERT_TRUE(j.contains("runs"));
  ASSERT_EQ(j["runs"].size(), 2u);
  for (const auto& run : j["runs"]) {
    for (const char* f : kRunFields) EXPECT_TRUE(run.contains(f)) << f;
    for (const char* f : kViolationFields) EXPECT_TRUE(run["violations"][f].is_number_unsigned()) << f;
    EXPECT_EQ(run["profile"], "A");
    EXPECT_EQ(run["target"], "stack");
    EXPECT_EQ(run["threads"], 8);
    EXPECT_EQ(run["file_size"], 65536);
    EXPECT_GT(run["ops"].get<uint64_t>(), 0u);
    EXPECT_GT(run["ops_per_s"].get<double>(), 0.0);
    EXPECT_EQ(run["bytes_written"].get<uint64_t>(), run["ops"].get<uint64_t>() * 4096);
    EXPECT_TRUE(run["writer_wait_p99_us"].is_number());
  }
  const auto& none = j["runs"][0];
  const auto& fork = j["runs"][1];
  EXPECT_EQ(none["policy"], "none");
  EXPECT_EQ(none["verdict"], "corrupt");
  EXPECT_GT(none["violations"]["modified_in_flight"].get<uint64_t>(), 0u);
  EXPECT_EQ(fork["policy"], "fork");
  EXPECT_EQ(fork["verdict"], "clean") << fork.dump();
}

TEST(Cli, WacWithoutAVerifyLayerStillCatchesNone) {
  nlohmann::json j = RunJson("wac --profile A --policy none --duration 1 --threads 8 --stack 'integrity,delay(us=200),file'");
  ASSERT_EQ(j["runs"].size(), 1u);
  EXPECT_EQ(j["runs"][0]["verdict"], "corrupt");
  EXPECT_GT(j["runs"][0]["violations"]["integrity_errors"].get<uint64_t>(), 0u);
  EXPECT_GT(j["runs"][0]["checker_reads"].get<uint64_t>(), 0u);
}

TEST(Cli, EveryProfileOnTheLibraryRunsOrSaysUnsupported) {
  nlohmann::json j = RunJson("wac --profile all --duration 0.5 --threads 4");
  ASSERT_EQ(j["runs"].size(), 6u);
  EXPECT_EQ(j["runs"][0]["profile"], "A");
  EXPECT_EQ(j["runs"][0]["verdict"], "clean");  // auto -> fork on this stack
  EXPECT_EQ(j["runs"][0]["effective_policy"], "fork");
  for (size_t i = 1; i < 6; i++) {
    EXPECT_EQ(j["runs"][i]["verdict"], "unsupported") << i;
    EXPECT_NE(j["runs"][i]["note"].get<std::string>().find("not built yet"), std::string::npos);
  }
}

TEST(Cli, EveryProfileOnAKernelFilesystemReadsBackClean) {
  std::string dir = std::filesystem::temp_directory_path() / ("stablecache-cli-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  nlohmann::json j = RunJson("wac --profile all --duration 0.5 --threads 4 --target " + dir);
  std::filesystem::remove_all(dir);
  ASSERT_EQ(j["runs"].size(), 6u);
  for (const auto& run : j["runs"]) {
    EXPECT_EQ(run["target"], dir);
    if (run["verdict"] == "unsupported") {  // no O_DIRECT on this filesystem
      EXPECT_NE(run["note"].get<std::string>().find("O_DIRECT"), std::string::npos);
      continue;
    }
    EXPECT_EQ(run["verdict"], "clean") << run.dump();
    EXPECT_GT(run["ops"].get<uint64_t>(), 0u);
  }
}

TEST(Cli, TheTableReportsEveryRun) {
  CliResult r = RunCli("wac --profile A,B --policy fork --duration 0.3 --threads 4");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("verdict"), std::string::npos);
  EXPECT_NE(r.out.find("clean"), std::string::npos);
  EXPECT_NE(r.out.find("unsupported"), std::string::npos);
}

}  // namespace
}  // namespace stablecache
