// The stablecache command line, run as a user would: option errors, the
// wac JSON schema of DESIGN.md section 4, and a short run of every profile
// on both targets.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace stablecache {
namespace {

struct CliResult {
  int exit_code = -1;
  std::string out, err;
};

// The binary under test; STABLECACHE_CLI in the environment overrides the
// one built beside the tests (to run these tests against another build).
std::string Cli() {
  const char* env = std::getenv("STABLECACHE_CLI");
  return env && *env ? env : STABLECACHE_CLI;
}

std::string ReadWhole(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

CliResult RunCli(const std::string& args) {
  testing::TempFile err_file("cli-err");
  std::string cmd = Cli() + " " + args + " 2>" + err_file.path();
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

// A usage error exits 2 (README, DESIGN.md section 4) with one line on
// stderr that names what was wrong, and prints nothing on stdout.
void ExpectUsageError(const std::string& args, const std::string& says) {
  CliResult r = RunCli(args);
  EXPECT_EQ(r.exit_code, 2) << args << "\nstderr: " << r.err;
  EXPECT_NE(r.err.find(says), std::string::npos) << args << "\nstderr: " << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << args << "\nstderr: " << r.err;
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

TEST(Cli, NumericOptionsSayWhatIsWrongWithTheNumber) {
  ExpectUsageError("wac --duration abc", "--duration: 'abc' is not a number");
  ExpectUsageError("wac --duration inf", "--duration: 'inf' is not a finite number");
  ExpectUsageError("wac --duration 0", "--duration: 0 must be above 0 seconds");
  ExpectUsageError("wac --duration=-1", "--duration: -1 is out of range");
  ExpectUsageError("wac --duration", "--duration");
  ExpectUsageError("wac --threads abc", "--threads: 'abc' is not a number");
  ExpectUsageError("wac --threads 1.5", "--threads: '1.5' is not a whole number");
  ExpectUsageError("wac --threads 5000", "--threads: 5000 is out of range (1 to 4096)");
  ExpectUsageError("wac --threads=-3", "--threads: '-3' is out of range");
  ExpectUsageError("wac --threads 99999999999999999999", "--threads: '99999999999999999999' is out of range");
  ExpectUsageError("wac --file-size abc", "--file-size: bad size 'abc'");
  ExpectUsageError("bench --rounds x", "--rounds: 'x' is not a number");
  ExpectUsageError("bench --rounds 0", "--rounds: 0 is out of range (1 to 100)");
  ExpectUsageError("bench --duration abc", "--duration: 'abc' is not a number");
  ExpectUsageError("bench --threads 1e3", "--threads: '1e3' is not a whole number");
  ExpectUsageError("demo --size abc", "bad size 'abc'");
  ExpectUsageError("demo --policy sometimes", "sometimes");
}

TEST(Cli, EveryUsageErrorExits2AndHelpExits0) {
  ExpectUsageError("", "subcommand");
  ExpectUsageError("frobnicate", "frobnicate");
  ExpectUsageError("wac extra", "extra");
  ExpectUsageError("bench --frobnicate", "frobnicate");
  // A flag given a huge value: CLI11's std::stoll threw out of the parser
  // and the program aborted (found by fuzz_wac_options).
  ExpectUsageError("wac --no-live-check=-777777777777777777777777777", "flag");
  for (const char* help : {"--help", "wac --help", "bench --help", "demo --help"}) {
    CliResult r = RunCli(help);
    EXPECT_EQ(r.exit_code, 0) << help << "\n" << r.err;
    EXPECT_NE(r.out.find("--"), std::string::npos) << help;
  }
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

TEST(Cli, EveryProfileOnTheLibraryRuns) {
  nlohmann::json j = RunJson("wac --profile all --duration 0.5 --threads 4");
  ASSERT_EQ(j["runs"].size(), 6u);
  EXPECT_EQ(j["runs"][0]["profile"], "A");
  EXPECT_EQ(j["runs"][0]["verdict"], "clean");  // auto -> fork on this stack
  EXPECT_EQ(j["runs"][0]["effective_policy"], "fork");
  for (size_t i = 1; i < 6; i++) {
    EXPECT_EQ(j["runs"][i]["verdict"], "clean") << j["runs"][i].dump();
    EXPECT_GT(j["runs"][i]["ops"].get<uint64_t>(), 0u);
  }
  for (size_t i : {1, 2, 3, 5})  // mapped writers, so fork is a bounce
    EXPECT_EQ(j["runs"][i]["effective_policy"], "bounce") << i;
  EXPECT_EQ(j["runs"][4]["effective_policy"], "fork");
  for (size_t i = 3; i < 6; i++) EXPECT_GT(j["runs"][i]["direct_writes"].get<uint64_t>(), 0u) << i;
}

// Direct writers (D, E, F) scribble their buffer while the write is in
// flight. Under none the cache vouches for it and nothing is bounced: the
// integrity layer checksums one snapshot and the device gets another.
// Under auto the stack bounces it once, and the read-back accepts any
// byte-wise mix of the write's content and its scribble.
TEST(Cli, DirectProfilesCatchNoneAndRunCleanUnderAuto) {
  nlohmann::json j = RunJson("wac --profile D,E,F --policy none,auto --duration 1 --threads 8");
  ASSERT_EQ(j["runs"].size(), 6u);
  for (const auto& run : j["runs"]) {
    EXPECT_GT(run["ops"].get<uint64_t>(), 0u) << run.dump();
    EXPECT_GT(run["direct_writes"].get<uint64_t>(), 0u) << run.dump();
    EXPECT_TRUE(run["live_scribbled_direct_writes"].is_number_unsigned()) << run.dump();
    if (run["policy"] == "none") {
      EXPECT_EQ(run["verdict"], "corrupt") << run.dump();
      EXPECT_GT(run["violations"]["modified_in_flight"].get<uint64_t>(), 0u) << run.dump();
    } else {
      EXPECT_EQ(run["verdict"], "clean") << run.dump();
      EXPECT_GT(run["bytes_bounced"].get<uint64_t>(), 0u) << run.dump();
    }
  }
}

// E without a verify layer: only the integrity layer can tell, and does.
TEST(Cli, ScribbledDirectWritesFailTheirIntegrityCheckUnderNone) {
  nlohmann::json j = RunJson("wac --profile E --policy none,auto --duration 1 --threads 8 --stack integrity,file");
  ASSERT_EQ(j["runs"].size(), 2u);
  EXPECT_EQ(j["runs"][0]["verdict"], "corrupt") << j["runs"][0].dump();
  EXPECT_GT(j["runs"][0]["violations"]["integrity_errors"].get<uint64_t>(), 0u) << j["runs"][0].dump();
  EXPECT_EQ(j["runs"][1]["verdict"], "clean") << j["runs"][1].dump();
}

// Mapped writers (B) and a mix (C): under none a store lands on a page under
// writeback and the verify and integrity layers catch it; under auto the
// writeback writes a copy and nothing is caught.
TEST(Cli, MappedProfilesCatchNoneAndRunCleanUnderAuto) {
  nlohmann::json j = RunJson("wac --profile B,C --policy none,auto --duration 1 --threads 8");
  ASSERT_EQ(j["runs"].size(), 4u);
  for (const auto& run : j["runs"]) {
    EXPECT_GT(run["ops"].get<uint64_t>(), 0u) << run.dump();
    if (run["policy"] == "none") {
      EXPECT_EQ(run["verdict"], "corrupt") << run.dump();
      EXPECT_GT(run["violations"]["modified_in_flight"].get<uint64_t>(), 0u) << run.dump();
    } else {
      EXPECT_EQ(run["verdict"], "clean") << run.dump();
      EXPECT_GT(run["bytes_bounced"].get<uint64_t>(), 0u) << run.dump();
    }
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

// A block that no mirror leg can read is lost data: the final scrub finds
// it (here past the file, where only the scrub looks) and the verdict says
// corrupt, with the count in violations.unreadable.
TEST(Cli, WacCountsUnreadableScrubFindings) {
  const std::string leg = "[fault(op=read,offset=8M,len=4096,count=-1),memory:16M]";
  nlohmann::json j =
      RunJson("wac --profile A --policy fork --duration 0.3 --threads 2 --stack 'mirror(" + leg + "," + leg + ")'");
  ASSERT_EQ(j["runs"].size(), 1u);
  const auto& run = j["runs"][0];
  EXPECT_EQ(run["verdict"], "corrupt") << run.dump();
  ASSERT_TRUE(run["violations"].contains("unreadable")) << run.dump();
  EXPECT_GT(run["violations"]["unreadable"].get<uint64_t>(), 0u);
  bool listed = false;
  // Leg offset 8M is mirror block 2048 - 3: the legs' first 12 KiB hold the
  // member record (2 slots) and the write-intent bitmap (1 block).
  for (const auto& b : run["bad_blocks"]) listed |= b["kind"] == "scrub:unreadable" && b["block"] == 2045;
  EXPECT_TRUE(listed) << run.dump();
}

// The same stack without the fault is clean: the finding above is the
// fault's, not the mirror's (negative control).
TEST(Cli, WacMirrorOfMemoryIsClean) {
  nlohmann::json j = RunJson("wac --profile A --policy fork --duration 0.3 --threads 2 --stack 'mirror(memory:16M,memory:16M)'");
  ASSERT_EQ(j["runs"].size(), 1u);
  EXPECT_EQ(j["runs"][0]["verdict"], "clean") << j.dump();
  EXPECT_EQ(j["runs"][0]["violations"]["unreadable"], 0u) << j.dump();
}

// Runs the CLI in a child with TMPDIR=tmpdir, stdout and stderr to files.
pid_t SpawnCli(const std::vector<std::string>& args, const std::string& tmpdir, const std::string& out,
               const std::string& err) {
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  ::setenv("TMPDIR", tmpdir.c_str(), 1);
  int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ::dup2(o, 1);
  ::dup2(e, 2);
  std::string cli = Cli();
  std::vector<char*> argv{cli.data()};
  std::vector<std::string> copy = args;
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  ::execv(cli.c_str(), argv.data());
  ::_exit(127);
}

// Polls until pred() holds; false after `limit` (a hang detector, not a timing).
template <typename Pred>
bool WaitFor(Pred pred, std::chrono::seconds limit = std::chrono::seconds(60)) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

// Waits for the child; its exit code, 1000 + the signal that killed it, or
// -1 on a hang (then it is killed).
int WaitExit(pid_t pid) {
  int status = 0;
  bool done = WaitFor([&] { return ::waitpid(pid, &status, WNOHANG) == pid; });
  if (!done) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + WTERMSIG(status);  // killed: not an exit code
}

bool DirIsEmpty(const std::string& dir) { return std::filesystem::is_empty(dir); }

class PrivateDir {
 public:
  PrivateDir() {
    char tmpl[] = "/tmp/stablecache-cli-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~PrivateDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Ctrl-C: the run stops, removes its temporary image, prints the partial
// report (still valid JSON) and exits 130. SIGTERM does the same.
void ExpectWacStopsCleanlyOn(int sig) {
  PrivateDir tmp;
  testing::TempFile out("cli-out"), err("cli-err");
  pid_t pid = SpawnCli({"wac", "--duration", "30", "--threads", "8", "--json"}, tmp.path(), out.path(), err.path());
  ASSERT_GT(pid, 0);
  // The run has started once its image exists in the private TMPDIR.
  ASSERT_TRUE(WaitFor([&] { return !DirIsEmpty(tmp.path()); })) << ReadWhole(err.path());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ::kill(pid, sig);
  EXPECT_EQ(WaitExit(pid), 130) << ReadWhole(err.path());
  EXPECT_TRUE(DirIsEmpty(tmp.path())) << "left behind in " << tmp.path();
  nlohmann::json j = nlohmann::json::parse(ReadWhole(out.path()), nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << "not JSON: " << ReadWhole(out.path());
  EXPECT_EQ(j["interrupted"], true);
  ASSERT_GE(j["runs"].size(), 1u);
  const auto& run = j["runs"][0];
  EXPECT_EQ(run["profile"], "A");
  EXPECT_EQ(run["interrupted"], true);
  EXPECT_LT(run["duration_s"].get<double>(), 30.0);
  EXPECT_GT(run["ops"].get<uint64_t>(), 0u);
  EXPECT_EQ(run["verdict"], "clean") << run.dump();  // what it wrote was read back and scrubbed
}

TEST(Cli, WacStopsCleanlyOnSigint) { ExpectWacStopsCleanlyOn(SIGINT); }
TEST(Cli, WacStopsCleanlyOnSigterm) { ExpectWacStopsCleanlyOn(SIGTERM); }

bool ProcMountsMention(const std::string& s) { return ReadWhole("/proc/mounts").find(s) != std::string::npos; }

std::string Popen(const std::string& cmd) {
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string out;
  if (!p) return out;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  ::pclose(p);
  return out;
}

// bench as root mounts two ext4 filesystems on loop devices over images in
// TMPDIR: a SIGINT while they are mounted unmounts, detaches and removes all.
// The loop devices use direct I/O, and the report says which loop mode ran:
// "direct" exactly when the kernel shows direct I/O on both devices, else
// "buffered" with a note saying why.
TEST(Cli, BenchRemovesItsLoopMountsOnSigint) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for loop devices";
  if (!std::filesystem::exists("/dev/loop-control")) GTEST_SKIP() << "no loop devices";
  if (std::system("command -v losetup >/dev/null && command -v mkfs.ext4 >/dev/null") != 0)
    GTEST_SKIP() << "needs losetup and mkfs.ext4";
  PrivateDir tmp;
  // Does the kernel give a loop device over a file in tmp direct I/O?
  bool kernel_allows_dio = false;
  {
    const std::string probe = tmp.path() + "/probe.img";
    { std::ofstream create(probe); }
    std::filesystem::resize_file(probe, 1 << 20);
    std::string dev = Popen("losetup --direct-io=on -f --show " + probe + " 2>/dev/null");
    while (!dev.empty() && dev.back() == '\n') dev.pop_back();
    if (!dev.empty()) {
      kernel_allows_dio = ReadWhole("/sys/block/" + std::filesystem::path(dev).filename().string() + "/loop/dio")
                              .starts_with("1");
      Popen("losetup -d " + dev);
    }
    std::filesystem::remove(probe);
  }
  testing::TempFile out("cli-out"), err("cli-err");
  pid_t pid = SpawnCli({"bench", "--duration", "60", "--threads", "2", "--rounds", "1", "--json"}, tmp.path(),
                       out.path(), err.path());
  ASSERT_GT(pid, 0);
  bool mounted = WaitFor([&] {
    std::string m = ReadWhole("/proc/mounts");
    size_t first = m.find(tmp.path());
    return first != std::string::npos && m.find(tmp.path(), first + 1) != std::string::npos;
  });
  if (!mounted) {  // e.g. a container that may not mount: the bench says why and runs without
    ::kill(pid, SIGINT);
    WaitExit(pid);
    GTEST_SKIP() << "bench did not mount its loop devices: " << ReadWhole(err.path());
  }
  // "DIO BACK-FILE" of each loop device over an image in tmp.
  std::istringstream ours(Popen("losetup -l -n -O DIO,BACK-FILE 2>/dev/null"));
  int loops_here = 0, direct_here = 0;
  for (std::string line; std::getline(ours, line);)
    if (line.find(tmp.path()) != std::string::npos) {
      loops_here++;
      std::istringstream f(line);
      int dio = 0;
      f >> dio;
      direct_here += dio == 1;
    }
  EXPECT_EQ(loops_here, 2);
  ::kill(pid, SIGINT);
  EXPECT_EQ(WaitExit(pid), 130) << ReadWhole(err.path());
  EXPECT_FALSE(ProcMountsMention(tmp.path()));
  std::string loops = Popen("losetup -a 2>/dev/null");
  EXPECT_EQ(loops.find(tmp.path()), std::string::npos) << loops;
  EXPECT_TRUE(DirIsEmpty(tmp.path())) << "left behind in " << tmp.path();
  nlohmann::json j = nlohmann::json::parse(ReadWhole(out.path()), nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << "not JSON: " << ReadWhole(out.path());
  EXPECT_EQ(j["interrupted"], true);
  if (kernel_allows_dio) {
    EXPECT_EQ(direct_here, 2) << "the kernel allows a direct-I/O loop here; bench used a buffered one";
  }
  if (loops_here == 2 && direct_here == 2) {
    EXPECT_EQ(j.value("kernel_loop", ""), "direct") << j.dump();
    EXPECT_FALSE(j.contains("kernel_loop_note")) << j.dump();
  } else {  // the kernel refused direct I/O here: never reported as direct, and said why
    EXPECT_NE(j.value("kernel_loop", ""), "direct") << j.dump();
    if (j.contains("kernel_loop")) {
      EXPECT_FALSE(j.value("kernel_loop_note", "").empty()) << j.dump();
    }
  }
}

TEST(Cli, TheTableReportsEveryRun) {
  CliResult r = RunCli("wac --profile A,D --policy fork --duration 0.3 --threads 4");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("verdict"), std::string::npos);
  EXPECT_NE(r.out.find("\nA   fork"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\nD   fork"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("unsupported"), std::string::npos) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 3) << r.out;  // header, A, D
}

}  // namespace
}  // namespace stablecache

namespace stablecache {
namespace {

// info, check and scrub --repair over a mirror of integrity legs on files,
// as a user would run them: a rotten copy on one leg is found by scrub,
// repaired from the other leg, and the set scrubs clean afterwards.
TEST(VolumeCommands, ScrubFindsAndRepairsARottenMirrorCopy) {
  testing::TempFile a("vol-a"), b("vol-b");
  std::filesystem::remove(a.path());
  std::filesystem::remove(b.path());
  const std::string spec = "'mirror([integrity,file:" + a.path() + "(size=4M)],[integrity,file:" + b.path() + "(size=4M)])'";
  const std::string bare = "'mirror([integrity,file:" + a.path() + "],[integrity,file:" + b.path() + "])'";
  ASSERT_EQ(RunCli("demo --stack " + spec + " --size 1M").exit_code, 0);
  CliResult info = RunCli("info --json " + bare);
  ASSERT_EQ(info.exit_code, 0) << info.err;
  auto j = nlohmann::json::parse(info.out);
  ASSERT_GE(j["layers"].size(), 3u);
  EXPECT_EQ(j["layers"][0]["layer"], "mirror");
  EXPECT_EQ(j["layers"][1]["layer"], "leg0/integrity(crc16)");
  EXPECT_EQ(RunCli("scrub " + bare).exit_code, 0);
  {  // rot 64 KiB in the middle of leg 1's data, behind its integrity layer
    int fd = ::open(b.path().c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    std::vector<char> junk(64 << 10, 0x55);
    ASSERT_EQ(::pwrite(fd, junk.data(), junk.size(), 512 << 10), static_cast<ssize_t>(junk.size()));
    ::close(fd);
  }
  CliResult found = RunCli("scrub --json " + bare);
  EXPECT_EQ(found.exit_code, 1) << found.out << found.err;
  auto f = nlohmann::json::parse(found.out);
  EXPECT_GT(f["scrub"]["degraded"].get<uint64_t>(), 0u) << found.out;
  EXPECT_EQ(f["scrub"]["unreadable"].get<uint64_t>(), 0u) << found.out;
  CliResult repaired = RunCli("scrub --repair --json " + bare);
  EXPECT_EQ(repaired.exit_code, 0) << repaired.out << repaired.err;
  EXPECT_EQ(nlohmann::json::parse(repaired.out)["scrub"]["repaired"].get<uint64_t>(),
            f["scrub"]["degraded"].get<uint64_t>() + f["scrub"]["mirror_divergence"].get<uint64_t>());
  CliResult after = RunCli("check " + bare);
  EXPECT_EQ(after.exit_code, 0) << after.out << after.err;
  EXPECT_NE(after.out.find("clean"), std::string::npos) << after.out;
}

TEST(VolumeCommands, NothingIsFormattedAndADisagreeingSpecFails) {
  testing::TempFile a("vol-blank");
  std::filesystem::remove(a.path());
  {
    std::ofstream(a.path()).close();
    std::filesystem::resize_file(a.path(), 1 << 20);
  }
  CliResult blank = RunCli("info 'integrity,file:" + a.path() + "'");
  EXPECT_EQ(blank.exit_code, 1);
  EXPECT_NE(blank.err.find("blank"), std::string::npos) << blank.err;
  std::vector<char> zero(8192);
  std::ifstream in(a.path(), std::ios::binary);
  in.read(zero.data(), zero.size());
  EXPECT_TRUE(std::all_of(zero.begin(), zero.end(), [](char c) { return c == 0; })) << "info wrote a record";
  ASSERT_EQ(RunCli("demo --stack 'integrity(guard=crc32c),file:" + a.path() + "' --size 64K").exit_code, 0);
  CliResult wrong = RunCli("check 'integrity(guard=crc16),file:" + a.path() + "'");
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_NE(wrong.err.find("guard=crc32c"), std::string::npos) << wrong.err;
}

}  // namespace
}  // namespace stablecache
