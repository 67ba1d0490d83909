// BuildStack: turns a parsed spec into devices, bottom first. It knows
// every device, so it sits above them (src/stack), never in block/.
#include <cerrno>
#include <charconv>
#include <functional>
#include <map>

#include <fmt/format.h>

#include "stack/stack_spec.h"
#include "devices/delay_device.h"
#include "devices/fault_device.h"
#include "devices/integrity_device.h"
#include "devices/logwrites_device.h"
#include "devices/mirror_device.h"
#include "devices/parity_device.h"
#include "devices/verify_device.h"
#include "devices/file_device.h"
#include "devices/memory_device.h"
#include "stablecache/stack.h"

namespace stablecache {

Result<uint64_t> ParseSize(std::string_view text) {
  if (text.empty()) return Err(Status::InvalidArgument("empty size"));
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p == text.data())
    return Err(Status::InvalidArgument(fmt::format("bad size '{}': expected a number with an optional K, M, G or T suffix", text)));
  std::string_view suffix(p, text.data() + text.size() - p);
  unsigned shift = 0;
  if (suffix.empty()) shift = 0;
  else if (suffix == "K" || suffix == "k" || suffix == "KiB") shift = 10;
  else if (suffix == "M" || suffix == "m" || suffix == "MiB") shift = 20;
  else if (suffix == "G" || suffix == "g" || suffix == "GiB") shift = 30;
  else if (suffix == "T" || suffix == "t" || suffix == "TiB") shift = 40;
  else
    return Err(Status::InvalidArgument(fmt::format("bad size '{}': unknown suffix '{}' (use K, M, G or T)", text, suffix)));
  if (shift && v > (UINT64_MAX >> shift)) return Err(Status::InvalidArgument(fmt::format("size '{}' overflows", text)));
  return v << shift;
}

namespace {

using Options = std::map<std::string, std::string>;

struct Ctx {
  std::string_view spec;
  const BuildOptions& opts;
  tl::unexpected<Status> Fail(const LayerSpec& l, const std::string& what) const {
    return Err(Status::InvalidArgument(fmt::format("stack spec '{}': layer '{}' at position {}: {}", spec, l.name, l.pos, what)));
  }
};

Result<Options> TakeOptions(const Ctx& c, const LayerSpec& l, std::initializer_list<const char*> allowed) {
  Options out;
  for (const auto& [k, v] : l.options) {
    bool ok = false;
    for (const char* a : allowed) ok |= k == a;
    if (!ok) {
      std::string list;
      for (const char* a : allowed) list += fmt::format("{}{}", list.empty() ? "" : ", ", a);
      return c.Fail(l, fmt::format("unknown option '{}' (allowed: {})", k, list.empty() ? "none" : list));
    }
    out[k] = v;
  }
  return out;
}

Result<uint64_t> UintOption(const Ctx& c, const LayerSpec& l, const Options& o, const char* key, uint64_t def) {
  auto it = o.find(key);
  if (it == o.end()) return def;
  auto v = ParseSize(it->second);
  if (!v) return c.Fail(l, fmt::format("option {}: {}", key, v.error().message()));
  return *v;
}

Result<std::shared_ptr<BlockDevice>> BuildMemory(const Ctx& c, const LayerSpec& l) {
  auto o = TakeOptions(c, l, {"late_copy", "delay_us", "size"});
  if (!o) return Err(o.error());
  std::string size_text = l.value.empty() ? (o->count("size") ? o->at("size") : "") : l.value;
  if (size_text.empty()) return c.Fail(l, "needs a size, e.g. memory:64M");
  auto size = ParseSize(size_text);
  if (!size) return c.Fail(l, size.error().message());
  MemoryDeviceOptions mo;
  mo.size_bytes = *size;
  auto late = UintOption(c, l, *o, "late_copy", 0);
  auto delay = UintOption(c, l, *o, "delay_us", 0);
  if (!late) return Err(late.error());
  if (!delay) return Err(delay.error());
  mo.late_copy = *late != 0;
  mo.delay = std::chrono::microseconds(*delay);
  auto dev = MemoryDevice::Create(mo);
  if (!dev) return c.Fail(l, dev.error().message());
  return std::shared_ptr<BlockDevice>(*dev);
}

Result<std::shared_ptr<BlockDevice>> BuildFile(const Ctx& c, const LayerSpec& l) {
  auto o = TakeOptions(c, l, {"size", "direct"});
  if (!o) return Err(o.error());
  FileDeviceOptions fo;
  fo.path = l.value.empty() ? c.opts.default_file : l.value;
  if (fo.path.empty()) return c.Fail(l, "needs a path, e.g. file:/var/tmp/disk.img");
  auto size = UintOption(c, l, *o, "size", l.value.empty() ? c.opts.default_file_size : 0);
  if (!size) return Err(size.error());
  fo.size_bytes = *size;
  fo.create = fo.size_bytes != 0 && c.opts.format;  // never create a missing file when not formatting
  if (auto it = o->find("direct"); it != o->end()) {
    if (it->second == "auto") fo.direct = DirectMode::kAuto;
    else if (it->second == "on") fo.direct = DirectMode::kOn;
    else if (it->second == "off") fo.direct = DirectMode::kOff;
    else return c.Fail(l, fmt::format("direct must be auto, on or off, not '{}'", it->second));
  }
  auto dev = FileDevice::Open(fo);
  if (!dev) return c.Fail(l, dev.error().message());
  return std::shared_ptr<BlockDevice>(*dev);
}

Result<int> ParseErrno(std::string_view s) {
  static const std::map<std::string_view, int> kNames = {
      {"EIO", EIO}, {"ENOSPC", ENOSPC}, {"EILSEQ", EILSEQ}, {"EROFS", EROFS}, {"ETIMEDOUT", ETIMEDOUT}};
  if (auto it = kNames.find(s); it != kNames.end()) return it->second;
  int v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec == std::errc() && p == s.data() + s.size() && v > 0) return v;
  return Err(Status::InvalidArgument(fmt::format("unknown error '{}' (EIO, ENOSPC, EILSEQ, EROFS, ETIMEDOUT or a number)", s)));
}

Result<std::shared_ptr<BlockDevice>> BuildFault(const Ctx& c, const LayerSpec& l, std::shared_ptr<BlockDevice> lower) {
  auto o = TakeOptions(c, l, {"op", "offset", "len", "error", "count", "nth", "skip", "action"});
  if (!o) return Err(o.error());
  FaultRule r;
  if (auto it = o->find("op"); it != o->end()) {
    if (it->second == "read") r.op = BioOp::kRead;
    else if (it->second == "write") r.op = BioOp::kWrite;
    else if (it->second == "flush") r.op = BioOp::kFlush;
    else if (it->second != "any") return c.Fail(l, fmt::format("op must be read, write, flush or any, not '{}'", it->second));
  }
  auto off = UintOption(c, l, *o, "offset", 0);
  auto len = UintOption(c, l, *o, "len", UINT64_MAX);
  if (!off) return Err(off.error());
  if (!len) return Err(len.error());
  r.offset = *off;
  r.len = *len;
  if (auto it = o->find("error"); it != o->end()) {
    auto e = ParseErrno(it->second);
    if (!e) return c.Fail(l, e.error().message());
    r.error = *e;
  }
  if (auto it = o->find("count"); it != o->end()) {
    if (it->second == "-1" || it->second == "forever") r.count = -1;
    else {
      auto n = ParseSize(it->second);
      if (!n) return c.Fail(l, "count must be a number or forever");
      r.count = static_cast<int64_t>(*n);
    }
  }
  // nth=N fails the Nth matching bio (once, unless count says otherwise);
  // skip=N lets N matching bios through first. They are two spellings of
  // one field, so giving both is an error.
  if (o->count("nth") && o->count("skip")) return c.Fail(l, "give nth or skip, not both (nth=N is skip=N-1)");
  if (auto it = o->find("nth"); it != o->end()) {
    auto n = ParseSize(it->second);
    if (!n || *n == 0 || *n > uint64_t{INT64_MAX}) return c.Fail(l, "nth must be a number from 1 (the first matching bio)");
    r.skip = static_cast<int64_t>(*n - 1);
    if (!o->count("count")) r.count = 1;
  }
  if (auto it = o->find("skip"); it != o->end()) {
    auto n = ParseSize(it->second);
    if (!n || *n > uint64_t{INT64_MAX}) return c.Fail(l, "skip must be a number");
    r.skip = static_cast<int64_t>(*n);
  }
  if (auto it = o->find("action"); it != o->end()) {
    if (it->second == "fail") r.action = FaultAction::kFail;
    else if (it->second == "drop") r.action = FaultAction::kDrop;
    else return c.Fail(l, fmt::format("action must be fail or drop, not '{}'", it->second));
  }
  auto dev = std::make_shared<FaultDevice>(std::move(lower));
  if (!o->empty()) dev->AddRule(r);
  return std::shared_ptr<BlockDevice>(dev);
}

Result<std::shared_ptr<BlockDevice>> BuildVerify(const Ctx& c, const LayerSpec& l, std::shared_ptr<BlockDevice> lower) {
  auto o = TakeOptions(c, l, {});
  if (!o) return Err(o.error());
  return std::shared_ptr<BlockDevice>(std::make_shared<VerifyDevice>(std::move(lower)));
}

Result<std::shared_ptr<BlockDevice>> BuildLogWrites(const Ctx& c, const LayerSpec& l,
                                                    std::shared_ptr<BlockDevice> lower) {
  auto o = TakeOptions(c, l, {});
  if (!o) return Err(o.error());
  return std::shared_ptr<BlockDevice>(std::make_shared<LogWritesDevice>(std::move(lower)));
}

Result<std::shared_ptr<BlockDevice>> BuildDelay(const Ctx& c, const LayerSpec& l, std::shared_ptr<BlockDevice> lower) {
  auto o = TakeOptions(c, l, {"us"});
  if (!o) return Err(o.error());
  auto us = UintOption(c, l, *o, "us", 100);
  if (!us) return Err(us.error());
  return std::shared_ptr<BlockDevice>(std::make_shared<DelayDevice>(std::move(lower), std::chrono::microseconds(*us)));
}

Result<Stability> ParseStability(const Ctx& c, const LayerSpec& l, const std::string& v) {
  if (v == "unstable") return Stability::kUnstable;
  if (v == "declared" || v == "declared-stable") return Stability::kDeclaredStable;
  if (v == "stable") return Stability::kStable;
  return c.Fail(l, fmt::format("require must be unstable, declared or stable, not '{}'", v));
}

Result<Stability> RequireOption(const Ctx& c, const LayerSpec& l, const Options& o, Stability def) {
  auto it = o.find("require");
  if (it == o.end()) return def;
  return ParseStability(c, l, it->second);
}

Result<std::shared_ptr<BlockDevice>> BuildIntegrity(const Ctx& c, const LayerSpec& l,
                                                    std::shared_ptr<BlockDevice> lower) {
  auto o = TakeOptions(c, l, {"guard", "require"});
  if (!o) return Err(o.error());
  IntegrityOptions io;
  if (auto it = o->find("guard"); it != o->end()) {
    if (it->second == "crc16" || it->second == "t10dif") io.guard = GuardType::kCrc16T10Dif;
    else if (it->second == "crc32c") io.guard = GuardType::kCrc32c;
    else return c.Fail(l, fmt::format("guard must be crc16 or crc32c, not '{}'", it->second));
  }
  auto req = RequireOption(c, l, *o, io.required);
  if (!req) return Err(req.error());
  io.required = *req;
  io.format = c.opts.format;
  auto dev = IntegrityDevice::Create(std::move(lower), io);
  if (!dev) return c.Fail(l, dev.error().message());
  return std::shared_ptr<BlockDevice>(*dev);
}

using Legs = std::vector<std::shared_ptr<BlockDevice>>;

// mirror and parity take the same option: require=.
template <typename Device, typename Options>
Result<std::shared_ptr<BlockDevice>> BuildFanout(const Ctx& c, const LayerSpec& l, Legs legs) {
  auto o = TakeOptions(c, l, {"require"});
  if (!o) return Err(o.error());
  auto req = RequireOption(c, l, *o, Options{}.required);
  if (!req) return Err(req.error());
  Options fo{.required = *req, .format = c.opts.format, .inspect = c.opts.inspect};
  if (c.opts.resync_progress)
    fo.progress = [f = c.opts.resync_progress](const ResyncProgress& p) { f(p.what, p.done_bytes, p.total_bytes); };
  auto dev = Device::Create(std::move(legs), fo);
  if (!dev) return c.Fail(l, dev.error().message());
  if (c.opts.warnings && !(*dev)->Describe().formatted)  // a new set is no news
    for (const std::string& note : (*dev)->Describe().notes)
      c.opts.warnings->push_back(fmt::format("stack spec '{}': layer '{}' at position {}: {}", c.spec, l.name, l.pos, note));
  return std::shared_ptr<BlockDevice>(*dev);
}

using FanoutBuilder = std::function<Result<std::shared_ptr<BlockDevice>>(const Ctx&, const LayerSpec&, Legs)>;

const std::map<std::string, FanoutBuilder>& Fanouts() {
  static const std::map<std::string, FanoutBuilder> m = {
      {"mirror", BuildFanout<MirrorDevice, MirrorOptions>}, {"parity", BuildFanout<ParityDevice, ParityOptions>}};
  return m;
}

using LeafBuilder = std::function<Result<std::shared_ptr<BlockDevice>>(const Ctx&, const LayerSpec&)>;
using LayerBuilder =
    std::function<Result<std::shared_ptr<BlockDevice>>(const Ctx&, const LayerSpec&, std::shared_ptr<BlockDevice>)>;

const std::map<std::string, LeafBuilder>& Leaves() {
  static const std::map<std::string, LeafBuilder> m = {{"memory", BuildMemory}, {"file", BuildFile}};
  return m;
}
const std::map<std::string, LayerBuilder>& Layers() {
  static const std::map<std::string, LayerBuilder> m = {
      {"fault", BuildFault}, {"verify", BuildVerify}, {"delay", BuildDelay}, {"integrity", BuildIntegrity},
      {"logwrites", BuildLogWrites}};
  return m;
}

std::string KnownNames() {
  std::string s;
  for (auto& [n, b] : Leaves()) s += fmt::format("{}{}", s.empty() ? "" : ", ", n);
  for (auto& [n, b] : Fanouts()) s += fmt::format(", {}", n);
  for (auto& [n, b] : Layers()) s += fmt::format(", {}", n);
  return s;
}

Result<std::shared_ptr<BlockDevice>> Build(const Ctx& c, const StackSpec& stack) {
  for (size_t i = 0; i + 1 < stack.size(); i++)
    if (Leaves().count(stack[i].name) || Fanouts().count(stack[i].name))
      return c.Fail(stack[i], "a leaf or fan-out device must be the last layer of a stack");
  const LayerSpec& bottom = stack.back();
  std::shared_ptr<BlockDevice> dev;
  if (auto fan = Fanouts().find(bottom.name); fan != Fanouts().end()) {
    if (!bottom.value.empty()) return c.Fail(bottom, "takes no ':' value");
    if (bottom.legs.empty())
      return c.Fail(bottom, "needs its legs in parentheses, e.g. '" + bottom.name + "(memory:1M,memory:1M,memory:1M)'");
    Legs legs;
    for (const StackSpec& leg : bottom.legs) {
      auto d = Build(c, leg);
      if (!d) return d;
      legs.push_back(std::move(*d));
    }
    auto d = fan->second(c, bottom, std::move(legs));
    if (!d) return d;
    dev = std::move(*d);
  } else if (auto it = Leaves().find(bottom.name); it != Leaves().end()) {
    if (!bottom.legs.empty()) return c.Fail(bottom, "a leaf device takes no lower devices");
    auto d = it->second(c, bottom);
    if (!d) return d;
    dev = std::move(*d);
  } else if (Layers().count(bottom.name)) {
    return c.Fail(bottom, "needs a device below it, e.g. '" + bottom.name + ",memory:64M'");
  } else {
    return c.Fail(bottom, fmt::format("unknown layer (known: {})", KnownNames()));
  }
  // integrity above a fan-out checks after the fan-out chose a leg: a bad
  // block fails the read although another leg may hold a good copy.
  if (c.opts.warnings && Fanouts().count(bottom.name))
    for (size_t i = 0; i + 1 < stack.size(); i++)
      if (stack[i].name == "integrity") {
        c.opts.warnings->push_back(fmt::format(
            "stack spec '{}': integrity at position {} sits above {} at position {}: a block that fails its check "
            "fails the read and is never repaired from another leg; put integrity inside each leg, e.g. "
            "{}([integrity,file:/a],[integrity,file:/b])",
            c.spec, stack[i].pos, bottom.name, bottom.pos, bottom.name));
        break;
      }
  for (size_t i = stack.size() - 1; i-- > 0;) {
    const LayerSpec& l = stack[i];
    auto it = Layers().find(l.name);
    if (it == Layers().end()) {
      if (Leaves().count(l.name)) return c.Fail(l, "a leaf device must be the last layer of a stack");
      return c.Fail(l, fmt::format("unknown layer (known: {})", KnownNames()));
    }
    if (!l.value.empty()) return c.Fail(l, "takes no ':' value");
    if (!l.legs.empty()) return c.Fail(l, "takes no lower devices in parentheses; stack it with ','");
    auto d = it->second(c, l, std::move(dev));
    if (!d) return d;
    dev = std::move(*d);
  }
  return dev;
}

}  // namespace

Result<std::shared_ptr<BlockDevice>> BuildStack(std::string_view spec, const BuildOptions& opts) {
  auto parsed = ParseStackSpec(spec);
  if (!parsed) return Err(parsed.error());
  Ctx c{spec, opts};
  return Build(c, *parsed);
}

}  // namespace stablecache
