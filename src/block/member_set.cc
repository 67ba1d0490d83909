#include "block/member_set.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "block/aligned_buffer.h"
#include "block/bio_join.h"

namespace stablecache {

namespace {

constexpr uint64_t kBlock = 4096;
constexpr uint64_t kRecordArea = 2 * kRecordBytes;  // A and B slots at offset 0
constexpr uint64_t kMinRegion = 64 << 10;
constexpr uint64_t kMaxBitmapBlocks = 8;            // 262144 regions
constexpr uint64_t kBitsPerBlock = kBlock * 8;
constexpr uint64_t kRebuildStep = 1 << 20;
constexpr uint32_t kStateClean = 0, kStateActive = 1;
constexpr uint32_t kFormatVersion = 2;  // v1 (no base_events, faulty_roles) is still read
constexpr size_t kMaxLegs = 64;          // faulty_roles is a 64-bit mask

// Payload fields (doc/mirror_parity_format.md).
constexpr size_t kLegCountAt = 0, kRoleAt = 4, kDataOffsetAt = 8, kDataSizeAt = 16, kEventsAt = 24, kChunkAt = 32,
                 kStateAt = 36, kRegionAt = 40, kBitmapOffsetAt = 48, kBitmapBlocksAt = 56, kBaseEventsAt = 64,
                 kFaultyRolesAt = 72, kPayloadLen = 80;

// The data epoch of a record; a v1 record has no base and no faulty roles.
uint64_t EventsOf(const MetadataRecord& r) { return r.Get<uint64_t>(kEventsAt); }
uint64_t BaseOf(const MetadataRecord& r) { return r.version >= 2 ? r.Get<uint64_t>(kBaseEventsAt) : EventsOf(r); }
uint64_t FaultyOf(const MetadataRecord& r) { return r.version >= 2 ? r.Get<uint64_t>(kFaultyRolesAt) : 0; }
uint64_t Bit(size_t role) { return uint64_t{1} << role; }

std::vector<size_t> Roles(uint64_t mask) {
  std::vector<size_t> v;
  for (size_t i = 0; i < kMaxLegs; i++)
    if (mask & Bit(i)) v.push_back(i);
  return v;
}

uint64_t RoundDown(uint64_t v, uint64_t a) { return v / a * a; }
uint64_t RoundUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

std::string LegName(const std::string& layer, size_t pos, const BlockDevice& d) {
  return fmt::format("{} leg {} ({})", layer, pos, d.Info().name);
}

// The layout of a new set over legs of at least `leg_bytes` each.
Result<SetLayout> NewLayout(size_t legs, uint64_t leg_bytes, uint32_t chunk, const std::string& layer) {
  SetLayout l;
  l.leg_count = static_cast<uint32_t>(legs);
  l.chunk_bytes = chunk;
  leg_bytes = RoundDown(leg_bytes, kBlock);
  const uint64_t raw = leg_bytes > kRecordArea ? leg_bytes - kRecordArea : 0;
  uint64_t region = kMinRegion;
  while (raw / region > kMaxBitmapBlocks * kBitsPerBlock) region *= 2;
  const uint64_t regions = std::max<uint64_t>(1, (raw + region - 1) / region);
  l.bitmap.bitmap_offset = kRecordArea;
  l.bitmap.bitmap_blocks = static_cast<uint32_t>((regions + kBitsPerBlock - 1) / kBitsPerBlock);
  l.bitmap.region_bytes = region;
  l.data_offset = kRecordArea + uint64_t{l.bitmap.bitmap_blocks} * kBlock;
  if (leg_bytes >= (64ull << 20)) l.data_offset = RoundUp(l.data_offset, 1 << 20);  // aligned data on big legs
  if (leg_bytes < l.data_offset + chunk)
    return Err(Status::NoSpace(fmt::format("{}: a leg of {} bytes has no room for data after its {} bytes of metadata",
                                           layer, leg_bytes, l.data_offset)));
  l.data_size = RoundDown(leg_bytes - l.data_offset, chunk);
  l.bitmap.regions = (l.data_size + region - 1) / region;
  return l;
}

SetLayout LayoutOf(const MetadataRecord& r) {
  SetLayout l;
  l.leg_count = r.Get<uint32_t>(kLegCountAt);
  l.chunk_bytes = r.Get<uint32_t>(kChunkAt);
  l.data_offset = r.Get<uint64_t>(kDataOffsetAt);
  l.data_size = r.Get<uint64_t>(kDataSizeAt);
  l.bitmap.region_bytes = r.Get<uint64_t>(kRegionAt);
  l.bitmap.bitmap_offset = r.Get<uint64_t>(kBitmapOffsetAt);
  l.bitmap.bitmap_blocks = r.Get<uint32_t>(kBitmapBlocksAt);
  l.bitmap.regions = l.bitmap.region_bytes ? (l.data_size + l.bitmap.region_bytes - 1) / l.bitmap.region_bytes : 0;
  return l;
}

bool SameGeometry(const SetLayout& a, const SetLayout& b) {
  return a.leg_count == b.leg_count && a.chunk_bytes == b.chunk_bytes && a.data_offset == b.data_offset &&
         a.data_size == b.data_size && a.bitmap.region_bytes == b.bitmap.region_bytes &&
         a.bitmap.bitmap_offset == b.bitmap.bitmap_offset && a.bitmap.bitmap_blocks == b.bitmap.bitmap_blocks;
}

// A record's own sanity: the geometry must describe a usable layout.
std::string CheckLayout(const SetLayout& l) {
  if (l.leg_count == 0) return "leg count 0";
  if (l.chunk_bytes == 0 || l.chunk_bytes % kBlock) return fmt::format("chunk size {}", l.chunk_bytes);
  if (l.bitmap.region_bytes < kBlock) return fmt::format("bitmap region size {}", l.bitmap.region_bytes);
  if (l.bitmap.bitmap_offset < kRecordArea) return fmt::format("bitmap offset {}", l.bitmap.bitmap_offset);
  if (l.bitmap.regions > uint64_t{l.bitmap.bitmap_blocks} * kBitsPerBlock) return "bitmap too small for its regions";
  if (l.data_offset < l.bitmap.bitmap_offset + uint64_t{l.bitmap.bitmap_blocks} * kBlock)
    return fmt::format("data offset {} inside the bitmap", l.data_offset);
  if (l.data_size == 0 || l.data_size % l.chunk_bytes) return fmt::format("data size {}", l.data_size);
  return {};
}

}  // namespace

Result<SetMembers> ReadMembers(std::vector<std::shared_ptr<BlockDevice>> legs, const SetSpec& spec) {
  const size_t n = legs.size();
  const std::string& layer = spec.layer;
  if (n > kMaxLegs)
    return Err(Status::InvalidArgument(fmt::format("{}: the spec lists {} legs; a set has at most {}", layer, n, kMaxLegs)));
  std::vector<DecodedRecord> found(n);
  for (size_t i = 0; i < n; i++) {
    if (legs[i]->Info().size_bytes < kRecordArea)
      return Err(Status::NoSpace(fmt::format("{} has {} bytes; a leg needs room for its member record",
                                             LegName(layer, i, *legs[i]), legs[i]->Info().size_bytes)));
    auto d = ReadRecordSlots(*legs[i], 0, spec.magic);
    if (!d) return Err(d.error().WithContext(LegName(layer, i, *legs[i])));
    found[i] = std::move(*d);
    switch (found[i].state) {
      case RecordState::kBlank:
      case RecordState::kValid: break;
      case RecordState::kForeign:
        return Err(Status::InvalidArgument(fmt::format(
            "{} holds a {} ({}), but the spec asks for a {} leg; refusing to overwrite it", LegName(layer, i, *legs[i]),
            fmt::format("{} member record", found[i].found_layer), DescribeRecord(found[i]), layer)));
      case RecordState::kCorrupt:
        return Err(Status::InvalidArgument(fmt::format(
            "{} is not blank but holds no valid {} member record ({}); refusing to overwrite what is there",
            LegName(layer, i, *legs[i]), layer, found[i].why)));
    }
  }

  SetMembers m;
  m.inspect = spec.inspect;
  m.description.layer = layer;
  m.description.format = fmt::format("{} v{}", spec.magic, kFormatVersion);
  // The valid legs: one set, the spec's leg count, one leg per role, one geometry.
  std::optional<size_t> ref;  // the valid leg with the most events
  for (size_t i = 0; i < n; i++) {
    if (found[i].state != RecordState::kValid) continue;
    const MetadataRecord& r = found[i].record;
    if (r.version < 1 || r.version > kFormatVersion)
      return Err(Status::NotSupported(
          fmt::format("{} holds a {} member record of format version {}; this build reads v1 to v{}",
                      LegName(layer, i, *legs[i]), layer, r.version, kFormatVersion)));
    if (std::string why = CheckLayout(LayoutOf(r)); !why.empty())
      return Err(Status::InvalidArgument(fmt::format("{}: its {} member record is inconsistent ({}): {}",
                                                     LegName(layer, i, *legs[i]), layer, why, DescribeRecord(found[i]))));
    if (BaseOf(r) > EventsOf(r))
      return Err(Status::InvalidArgument(fmt::format("{}: its {} member record has base events {} above its events {}: {}",
                                                     LegName(layer, i, *legs[i]), layer, BaseOf(r), EventsOf(r),
                                                     DescribeRecord(found[i]))));
    if (!ref || EventsOf(r) > EventsOf(found[*ref].record)) ref = i;
  }
  if (!ref) {
    // Every leg blank: a new set.
    if (!spec.format)
      return Err(Status::InvalidArgument(fmt::format("{}: every leg is blank: no {} set to open", layer, layer)));
    uint64_t smallest = UINT64_MAX;
    for (const auto& l : legs) smallest = std::min(smallest, l->Info().size_bytes);
    auto layout = NewLayout(n, smallest, spec.chunk_bytes, layer);
    if (!layout) return Err(layout.error());
    m.layout = *layout;
    m.uuid = Uuid::Random();
    m.fresh = true;
    m.legs = std::move(legs);
    m.stale.assign(n, false);
    m.description.formatted = true;
    for (size_t i = 0; i < n; i++)
      m.description.legs.push_back({i, i, m.legs[i]->Info().name, "blank (never formatted)", 0, "current", false});
    m.description.notes.push_back(fmt::format("every leg was blank: formatted a new {} set", layer));
    return m;
  }

  const MetadataRecord& rr = found[*ref].record;
  m.layout = LayoutOf(rr);
  m.uuid = rr.uuid;
  m.events = EventsOf(rr);
  m.base_events = BaseOf(rr);
  m.faulty = FaultyOf(rr);
  std::vector<std::optional<size_t>> by_role(std::max<size_t>(n, m.layout.leg_count));  // role -> spec position
  for (size_t i = 0; i < n; i++) {
    if (found[i].state != RecordState::kValid) continue;
    const MetadataRecord& r = found[i].record;
    if (!(r.uuid == rr.uuid))
      return Err(Status::InvalidArgument(fmt::format(
          "the spec joins legs of two different {} sets: {} belongs to set {} ({}), {} to set {} ({})", layer,
          LegName(layer, *ref, *legs[*ref]), rr.uuid.ToString(), DescribeRecord(found[*ref]),
          LegName(layer, i, *legs[i]), r.uuid.ToString(), DescribeRecord(found[i]))));
    const SetLayout l = LayoutOf(r);
    if (l.leg_count != n)
      return Err(Status::InvalidArgument(fmt::format(
          "the spec lists {} legs, but {} belongs to a {} set of {} legs ({})", n, LegName(layer, i, *legs[i]), layer,
          l.leg_count, DescribeRecord(found[i]))));
    if (!SameGeometry(l, m.layout))
      return Err(Status::InvalidArgument(fmt::format(
          "{} and {} of {} set {} record different geometries (data offset {} vs {}, data size {} vs {})",
          LegName(layer, *ref, *legs[*ref]), LegName(layer, i, *legs[i]), layer, rr.uuid.ToString(),
          m.layout.data_offset, l.data_offset, m.layout.data_size, l.data_size)));
    const uint32_t role = r.Get<uint32_t>(kRoleAt);
    if (role >= n)
      return Err(Status::InvalidArgument(
          fmt::format("{} records role {} in a set of {} legs ({})", LegName(layer, i, *legs[i]), role, n,
                      DescribeRecord(found[i]))));
    if (by_role[role])
      return Err(Status::InvalidArgument(fmt::format(
          "{} and {} both claim role {} of {} set {}: the spec names one leg twice, or a leg image was copied",
          LegName(layer, *by_role[role], *legs[*by_role[role]]), LegName(layer, i, *legs[i]), role, layer,
          rr.uuid.ToString())));
    by_role[role] = i;
  }
  if (m.layout.chunk_bytes != spec.chunk_bytes)
    return Err(Status::InvalidArgument(fmt::format("{} set {} has {}-byte chunks on the medium; this build uses {}",
                                                   layer, rr.uuid.ToString(), m.layout.chunk_bytes, spec.chunk_bytes)));
  // Blank legs take the free roles, in spec order.
  size_t next_free = 0;
  for (size_t i = 0; i < n; i++) {
    if (found[i].state != RecordState::kBlank) continue;
    while (by_role[next_free]) next_free++;
    by_role[next_free] = i;
  }
  m.legs.resize(n);
  m.stale.assign(n, false);
  std::vector<std::string> stale_names;
  for (size_t role = 0; role < n; role++) {
    const size_t pos = *by_role[role];
    const DecodedRecord& d = found[pos];
    m.legs[role] = legs[pos];
    const uint64_t need = m.layout.data_offset + m.layout.data_size;
    if (legs[pos]->Info().size_bytes < need)
      return Err(Status::NoSpace(fmt::format("{} has {} bytes, but {} set {} keeps {} bytes on every leg ({} data from offset {})",
                                             LegName(layer, pos, *legs[pos]), legs[pos]->Info().size_bytes, layer,
                                             rr.uuid.ToString(), need, m.layout.data_size, m.layout.data_offset)));
    if (d.state == RecordState::kValid && RoundDown(legs[pos]->Info().size_bytes, kBlock) >= need + m.layout.chunk_bytes)
      m.description.notes.push_back(fmt::format(
          "{} has {} bytes but the set uses {} of each leg: growing a set is not supported, the rest stays unused",
          LegName(layer, pos, *legs[pos]), legs[pos]->Info().size_bytes, need));
    LegDescription ld{pos, role, legs[pos]->Info().name, DescribeRecord(d), 0, "current", false};
    ld.faulty = (m.faulty & Bit(role)) != 0;
    if (d.state == RecordState::kBlank) {
      ld.state = "blank";
      m.stale[role] = true;
      m.description.notes.push_back(fmt::format("{} is blank (a new or recreated leg): it takes role {} and is rebuilt",
                                                LegName(layer, pos, *legs[pos]), role));
    } else {
      // R (the newest record) decides: a leg it lists as faulty missed
      // writes; one below its base events is older than the last moment no
      // leg lacked data (an earlier image); one at or above it only missed
      // a bump (a crash between two legs' record writes) and is current.
      ld.events = EventsOf(d.record);
      ld.base_events = BaseOf(d.record);
      if (ld.faulty) {
        ld.state = "stale";
        m.stale[role] = true;
        m.description.notes.push_back(fmt::format(
            "{} is stale (role {} is listed as faulty at events {}: it failed a write): it is rebuilt",
            LegName(layer, pos, *legs[pos]), role, m.events));
      } else if (ld.events < m.base_events) {
        ld.state = "stale";
        m.stale[role] = true;
        m.description.notes.push_back(
            fmt::format("{} is stale (events {} < base events {} of the newest record, events {}): it missed writes "
                        "and is rebuilt",
                        LegName(layer, pos, *legs[pos]), ld.events, m.base_events, m.events));
      } else if (ld.events < m.events) {
        m.description.notes.push_back(fmt::format(
            "{} missed an interrupted events bump (events {}, newest {} with base {}): current, no data missed",
            LegName(layer, pos, *legs[pos]), ld.events, m.events, m.base_events));
      }
      if (role != pos)
        m.description.notes.push_back(fmt::format("{} holds role {}: placed by its recorded role, not its spec position",
                                                  LegName(layer, pos, *legs[pos]), role));
    }
    if (m.stale[role]) stale_names.push_back(LegName(layer, pos, *legs[pos]));
    m.description.legs.push_back(std::move(ld));
  }
  if (stale_names.size() > spec.max_stale || stale_names.size() == n) {
    std::string list;
    for (auto& s : stale_names) list += (list.empty() ? "" : ", ") + s;
    return Err(Status::InvalidArgument(fmt::format(
        "{} set {} can rebuild at most {} leg(s) at once, but {} are blank or stale (current events {}, base {}, "
        "faulty roles {})",
        layer, rr.uuid.ToString(), std::min(spec.max_stale, n - 1), list, m.events, m.base_events,
        fmt::join(Roles(m.faulty), ","))));
  }
  return m;
}

MemberSet::MemberSet(SetMembers m)
    : legs_(std::move(m.legs)),
      layout_(m.layout),
      uuid_(m.uuid),
      magic_(m.description.format.substr(0, 8)),
      fresh_(m.fresh),
      inspect_(m.inspect),
      found_events_(m.events),
      found_base_(m.base_events),
      found_faulty_(m.faulty),
      stale_(std::move(m.stale)),
      behind_(legs_.size(), false),
      desc_(std::move(m.description)) {}

MetadataRecord MemberSet::RecordFor(size_t role, uint64_t events, uint64_t base, uint64_t faulty) const {
  MetadataRecord r;
  r.magic = magic_;
  r.version = kFormatVersion;
  r.generation = events;
  r.uuid = uuid_;
  r.payload.assign(kPayloadLen, std::byte{0});
  r.Put<uint32_t>(kLegCountAt, layout_.leg_count);
  r.Put<uint32_t>(kRoleAt, static_cast<uint32_t>(role));
  r.Put<uint64_t>(kDataOffsetAt, layout_.data_offset);
  r.Put<uint64_t>(kDataSizeAt, layout_.data_size);
  r.Put<uint64_t>(kEventsAt, events);
  r.Put<uint32_t>(kChunkAt, layout_.chunk_bytes);
  r.Put<uint32_t>(kStateAt, kStateActive);
  r.Put<uint64_t>(kRegionAt, layout_.bitmap.region_bytes);
  r.Put<uint64_t>(kBitmapOffsetAt, layout_.bitmap.bitmap_offset);
  r.Put<uint32_t>(kBitmapBlocksAt, layout_.bitmap.bitmap_blocks);
  r.Put<uint64_t>(kBaseEventsAt, base);
  r.Put<uint64_t>(kFaultyRolesAt, faulty);
  return r;
}

Status MemberSet::WriteRecordSync(size_t role) {
  MetadataRecord r;
  {
    std::lock_guard lk(mu_);
    r = RecordFor(role, events_, base_events_, faulty_);
  }
  return WriteRecordSlot(*legs_[role], 0, r)
      .WithContext(fmt::format("{} role {} ({})", desc_.layer, role, legs_[role]->Info().name));
}

Status MemberSet::Assemble(const ResyncHooks& hooks, const ResyncProgressFn& progress) {
  const size_t n = legs_.size();
  std::vector<BlockDevice*> all, current;
  for (size_t i = 0; i < n; i++) {
    all.push_back(legs_[i].get());
    if (!stale_[i]) current.push_back(legs_[i].get());
  }
  auto report = [&](const std::string& what, uint64_t done, uint64_t total) {
    if (progress) progress({desc_.layer, what, done, total});
  };
  uint64_t stale_mask = 0;
  for (size_t i = 0; i < n; i++)
    if (stale_[i]) stale_mask |= Bit(i);
  auto set_epoch = [&](uint64_t events, uint64_t base, uint64_t faulty) {
    std::lock_guard lk(mu_);
    events_ = events;
    base_events_ = base;
    faulty_ = faulty;
  };
  if (inspect_) {
    set_epoch(found_events_, found_base_, found_faulty_);
    missing_mask_.store(stale_mask, std::memory_order_release);  // not rebuilt: never read
    // Opened to be looked at (`stablecache info`, `check`, `scrub`): no
    // events bump, no resync, no rebuild. Stale legs are still never read.
    auto dirty = WriteIntent::ReadDirty(current, layout_.bitmap);
    if (!dirty) return dirty.error();
    const uint64_t dirty_count = static_cast<uint64_t>(std::count(dirty->begin(), dirty->end(), true));
    for (uint64_t r = 0; r < dirty->size(); r++)
      if ((*dirty)[r]) dirty_at_open_.push_back(r);
    desc_.notes.push_back(fmt::format("opened for inspection: nothing written; {} dirty region(s) not resynced{}",
                                      dirty_count,
                                      std::find(stale_.begin(), stale_.end(), true) != stale_.end()
                                          ? ", stale legs not rebuilt"
                                          : ""));
  } else if (fresh_) {
    set_epoch(1, 0, 0);
    SC_RETURN_IF_ERROR(
        WriteIntent::WriteClean(all, layout_.bitmap, hooks.keep_regions ? hooks.keep_regions() : std::vector<uint64_t>{}));
    for (size_t i = 0; i < n; i++) SC_RETURN_IF_ERROR(WriteRecordSync(i));
  } else {
    // 1. Phase 1: the current legs move ahead first, recording the stale
    //    ones as faulty (a crash from here on leaves them stale), and the
    //    base as the events now: nothing has been written since, so a
    //    current leg that misses this bump lacks nothing.
    set_epoch(found_events_ + 1, found_events_, stale_mask);
    for (size_t i = 0; i < n; i++)
      if (!stale_[i]) SC_RETURN_IF_ERROR(WriteRecordSync(i));
    // 2. Regions a crash may have left disagreeing.
    auto dirty = WriteIntent::ReadDirty(current, layout_.bitmap);
    if (!dirty) return dirty.error();
    const uint64_t dirty_count = static_cast<uint64_t>(std::count(dirty->begin(), dirty->end(), true));
    const bool any_stale = std::find(stale_.begin(), stale_.end(), true) != stale_.end();
    if (dirty_count > 0 && any_stale && hooks.stale_leg_needs_clean_regions)
      return Status::IoError(fmt::format(
          "{} set {}: {} region(s) were being written when it stopped (parity may be stale there) and a leg is "
          "stale; its data in those regions cannot be rebuilt (md's dirty degraded array). Bring back the missing "
          "leg's current image",
          desc_.layer, uuid_.ToString(), dirty_count));
    uint64_t done = 0;
    const uint64_t R = layout_.bitmap.region_bytes;
    for (uint64_t r = 0; r < dirty->size(); r++) {
      if (!(*dirty)[r]) continue;
      const uint64_t len = std::min(R, layout_.data_size - r * R);
      SC_RETURN_IF_ERROR(hooks.resync_dirty(r * R, len).WithContext(
          fmt::format("{}: resyncing dirty region {}", desc_.layer, r)));
      done++;
      desc_.resynced_bytes += len;
      report("resyncing dirty regions", done * R, dirty_count * R);
    }
    desc_.dirty_regions_resynced = dirty_count;
    if (dirty_count) desc_.notes.push_back(fmt::format("resynced {} dirty region(s) of {} bytes", dirty_count, R));
    // 3. Stale legs, whole.
    for (size_t i = 0; i < n; i++) {
      if (!stale_[i]) continue;
      const std::string what = fmt::format("rebuilding {} role {} ({})", desc_.layer, i, legs_[i]->Info().name);
      for (uint64_t off = 0; off < layout_.data_size; off += kRebuildStep) {
        const uint64_t len = std::min(kRebuildStep, layout_.data_size - off);
        SC_RETURN_IF_ERROR(hooks.rebuild(i, off, len).WithContext(what));
        desc_.resynced_bytes += len;
        report(what, off + len, layout_.data_size);
      }
    }
    // 4. Everything written so far is durable, then the bitmap is clear,
    //    then phase 2: no leg lacks anything, base = phase 1's events. The
    //    current legs first, the rebuilt ones last: a crash in between
    //    leaves those below the new base (stale, rebuilt again).
    for (BlockDevice* l : all) SC_RETURN_IF_ERROR(FlushSync(*l));
    SC_RETURN_IF_ERROR(
        WriteIntent::WriteClean(all, layout_.bitmap, hooks.keep_regions ? hooks.keep_regions() : std::vector<uint64_t>{}));
    set_epoch(found_events_ + 2, found_events_ + 1, 0);
    for (size_t i = 0; i < n; i++)
      if (!stale_[i]) SC_RETURN_IF_ERROR(WriteRecordSync(i));
    for (size_t i = 0; i < n; i++)
      if (stale_[i]) SC_RETURN_IF_ERROR(WriteRecordSync(i));
  }
  std::lock_guard lk(mu_);
  for (auto& l : desc_.legs)
    if (stale_[l.role]) l.resynced = true;
  desc_.uuid = uuid_.ToString();
  desc_.data_offset = layout_.data_offset;
  desc_.data_size_per_leg = layout_.data_size;
  desc_.region_bytes = layout_.bitmap.region_bytes;
  desc_.chunk_bytes = layout_.chunk_bytes;
  desc_.bitmap_blocks = layout_.bitmap.bitmap_blocks;
  std::sort(desc_.legs.begin(), desc_.legs.end(), [](auto& a, auto& b) { return a.role < b.role; });
  return Status::Ok();
}

bool MemberSet::behind(size_t leg) const {
  std::lock_guard lk(mu_);
  return behind_[leg];
}

size_t MemberSet::missing_count() const {
  return static_cast<size_t>(__builtin_popcountll(missing_mask_.load(std::memory_order_acquire)));
}

void MemberSet::LegFailedWrite(size_t leg) {
  std::vector<std::pair<size_t, std::vector<std::byte>>> records;
  uint64_t ev;
  {
    std::lock_guard lk(mu_);
    if (behind_[leg]) return;
    behind_[leg] = true;
    missing_mask_.fetch_or(Bit(leg), std::memory_order_acq_rel);
    base_events_ = events_;
    ev = ++events_;
    faulty_ |= Bit(leg);
    const uint64_t missing = missing_mask_.load(std::memory_order_acquire);
    for (size_t i = 0; i < legs_.size(); i++)
      if (!(missing & Bit(i))) records.emplace_back(i, EncodeRecord(RecordFor(i, ev, base_events_, faulty_)));
    bumps_running_++;
  }
  // Each leg not missing: its record to slot events % 2, then a flush.
  auto join = BioJoin::Start(nullptr, [this](BioPtr, Status st) { BumpDone(std::move(st)); });
  for (auto& record : records) {
    const size_t i = record.first;  // not a structured binding: clang 14 cannot capture those
    const std::vector<std::byte>& enc = record.second;
    auto buf = AllocAligned(kRecordBytes);
    std::memcpy(buf.get(), enc.data(), kRecordBytes);
    auto c = join->Child(BioOp::kWrite, (ev % 2) * kRecordBytes, Stability::kStable);
    c->AddSegment(buf.get(), kRecordBytes);
    c->keep_alive.push_back(buf);
    auto counted = std::move(c->on_complete);
    BlockDevice* dev = legs_[i].get();
    c->on_complete = [counted = std::move(counted), dev, join, i, this](BioPtr b, Status st) mutable {
      if (!st.ok())
        return counted(std::move(b), st.WithContext(fmt::format("{}: recording a failed leg in the member record of "
                                                                "role {} (events bump)",
                                                                desc_.layer, i)));
      auto f = join->Child(BioOp::kFlush, 0, Stability::kStable);
      dev->Submit(std::move(f));
      counted(std::move(b), Status::Ok());
    };
    legs_[i]->Submit(std::move(c));
  }
  join->Arm();
}

void MemberSet::BumpDone(Status st) {
  std::vector<std::function<void(Status)>> calls;
  Status result;
  {
    std::lock_guard lk(mu_);
    bump_error_.Update(st);
    if (--bumps_running_ == 0) calls.swap(bump_waiters_);
    result = bump_error_;
  }
  for (auto& go : calls) go(result);  // the last may drop the device: touch nothing after
}

Status MemberSet::RecordError() const {
  std::lock_guard lk(mu_);
  return bump_error_;
}

void MemberSet::AfterRecorded(std::function<void(Status)> go) {
  Status now;
  {
    std::lock_guard lk(mu_);
    if (bumps_running_ > 0) {
      bump_waiters_.push_back(std::move(go));
      return;
    }
    now = bump_error_;
  }
  go(std::move(now));
}

SetDescription MemberSet::Describe() const {
  std::lock_guard lk(mu_);
  SetDescription d = desc_;
  d.events = events_;
  d.base_events = base_events_;
  d.faulty_roles = Roles(faulty_);
  for (auto& l : d.legs)
    if (behind_[l.role]) l.state = "behind (failed a write; missing until it is rebuilt at the next assembly)";
    else if (inspect_ && stale_[l.role]) l.state += " (not rebuilt: opened for inspection; never read)";
    else if (l.resynced) l.state = "current (resynced at assembly)";
    else l.state = "current";
  return d;
}

}  // namespace stablecache
