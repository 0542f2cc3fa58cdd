// ckpt_read: read a ckpt image without ckpt, in C++.
//
// Written only from schema/ckpt.capnp (the metadata, compiled with
// `capnp compile -oc++`) and the container layout of spec/format.md, as a
// check that the format can be read from another language, and as an
// example. It prints what examples/python/ckpt_read.py prints, in the same
// form, so tests/interop.sh checks both the same way.
//
//     ckpt_read IMAGE [--no-verify]
//     ckpt_read IMAGE --page ADDR [--pid PID] [--raw]
//
// Needs libcapnp (Debian: libcapnp-dev), liblz4 and libzstd.
// Exit status: 0 ok, 1 bad or unreadable image, 2 unsupported format major
// version or bad usage. Errors are one line "ckpt_read: error: ..." on
// stderr.

#include "ckpt.capnp.h"

#include <capnp/dynamic.h>
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>
#include <lz4.h>
#include <zstd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace {

constexpr int kSupportedMajor = 1;
constexpr uint64_t kHeaderLen = 32;
constexpr uint64_t kRecordLen = 24;
constexpr uint64_t kCommitPayload = 40;
constexpr uint64_t kMaxFrame = 64 << 20;
constexpr uint64_t kMaxMetadata = 1 << 30;
constexpr uint32_t kFrame = 1, kMetadata = 2, kCommit = 3;

// An error with the exit status it calls for.
struct Failure {
  int code;
  std::string msg;
};

[[noreturn]] void fail(int code, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
[[noreturn]] void fail(int code, const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  throw Failure{code, buf};
}

// CRC-32/IEEE (zlib's), table-driven.
uint32_t crc32(const uint8_t* p, size_t n) {
  static uint32_t table[256];
  static bool ready = false;
  if (!ready) {
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    ready = true;
  }
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}
uint32_t crc32(const std::vector<uint8_t>& v) { return crc32(v.data(), v.size()); }

uint16_t le16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }
uint32_t le32(const uint8_t* p) { uint32_t v; memcpy(&v, p, 4); return v; }
uint64_t le64(const uint8_t* p) { uint64_t v; memcpy(&v, p, 8); return v; }
uint64_t align8(uint64_t n) { return (n + 7) & ~uint64_t(7); }

// Arbitrary bytes from the kernel for display: valid UTF-8 as it is, other
// bytes as \xNN (what Python's "backslashreplace" does).
std::string text(capnp::Data::Reader d) {
  const uint8_t* p = d.begin();
  size_t n = d.size(), i = 0;
  std::string out;
  while (i < n) {
    uint8_t c = p[i];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    bool ok = len > 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; k++) ok = (p[i + k] & 0xC0) == 0x80;
    if (ok && len > 1) {
      uint32_t cp = c & (0x7F >> len);
      for (size_t k = 1; k < len; k++) cp = cp << 6 | (p[i + k] & 0x3F);
      static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
      ok = cp >= min[len] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
    }
    if (ok) {
      out.append(reinterpret_cast<const char*>(p + i), len);
      i += len;
    } else {
      char b[8];
      snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
      i++;
    }
  }
  return out;
}
std::string text(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

std::string dev_str(uint64_t dev) {
  // glibc's st_dev encoding (spec/format.md section 7).
  uint64_t major = ((dev >> 8) & 0xfff) | ((dev >> 32) & ~uint64_t(0xfff));
  uint64_t minor = (dev & 0xff) | ((dev >> 12) & ~uint64_t(0xff));
  char b[64];
  snprintf(b, sizeof b, "%02" PRIx64 ":%02" PRIx64, major, minor);
  return b;
}

// ---------------------------------------------------------------------------
// Container
// ---------------------------------------------------------------------------

struct RecordHeader {
  uint32_t kind;
  uint64_t length;
  uint32_t payload_crc;
};

struct CommitRec {
  uint64_t meta_off, meta_len, generation, end;
};

class Container {
 public:
  explicit Container(const std::string& path) : path_(path) {
    fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) fail(1, "cannot open %s: %s", path.c_str(), strerror(errno));
    struct stat st;
    if (fstat(fd_, &st) != 0) fail(1, "cannot stat %s: %s", path.c_str(), strerror(errno));
    size_ = uint64_t(st.st_size);
    read_header();
    find_commit();
    read_metadata();
  }
  ~Container() { if (fd_ >= 0) close(fd_); }

  std::vector<uint8_t> read_at(uint64_t off, uint64_t n) const {
    if (off > size_ || n > size_ - off)
      fail(1, "unexpected end of file: wanted %" PRIu64 " bytes at offset %" PRIu64 ", file is %" PRIu64 " bytes",
           n, off, size_);
    std::vector<uint8_t> b(n);
    size_t done = 0;
    while (done < n) {
      ssize_t r = pread(fd_, b.data() + done, n - done, off_t(off + done));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) fail(1, "reading %s at offset %" PRIu64 ": %s", path_.c_str(), off + done,
                       r < 0 ? strerror(errno) : "end of file");
      done += size_t(r);
    }
    return b;
  }

  // The record header at off, if there is a valid one there.
  std::optional<RecordHeader> record_header(uint64_t off) const {
    if (off + kRecordLen > size_) return std::nullopt;
    auto h = read_at(off, kRecordLen);
    if (memcmp(h.data(), "CKRC", 4) != 0 || crc32(h.data(), 20) != le32(&h[20])) return std::nullopt;
    return RecordHeader{le32(&h[4]), le64(&h[8]), le32(&h[16])};
  }

  // The stored bytes of a frame, checked against the record and the metadata.
  std::vector<uint8_t> frame_stored(uint32_t index, uint64_t offset, uint32_t stored, uint32_t crc) const {
    if (offset < kHeaderLen + kRecordLen) fail(1, "frame %u: offset %" PRIu64 " is inside the header", index, offset);
    auto h = record_header(offset - kRecordLen);
    if (!h) fail(1, "frame %u: no valid record header before offset %" PRIu64, index, offset);
    if (h->kind != kFrame) fail(1, "frame %u: offset %" PRIu64 " is in a record of kind %u", index, offset, h->kind);
    if (h->length != stored)
      fail(1, "frame %u: record holds %" PRIu64 " bytes, metadata says %u", index, h->length, stored);
    auto b = read_at(offset, stored);
    uint32_t got = crc32(b);
    if (got != h->payload_crc || got != crc)
      fail(1, "frame %u: CRC mismatch (record 0x%08x, metadata 0x%08x, computed 0x%08x)", index, h->payload_crc,
           crc, got);
    return b;
  }

  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
  int major_ = 0, minor_ = 0;
  uint32_t flags_ = 0;
  CommitRec commit_{};
  uint64_t commit_offset_ = 0;
  std::string commit_path_;
  int commits_seen_ = 0;
  uint64_t metadata_offset_ = 0;
  std::vector<uint8_t> metadata_;

 private:
  void read_header() {
    if (size_ < kHeaderLen)
      fail(1, "not a ckpt image: %" PRIu64 " bytes is too short for the 32-byte header", size_);
    auto h = read_at(0, kHeaderLen);
    if (memcmp(h.data(), "CKPTIMG\0", 8) != 0) {
      std::string m;
      for (int i = 0; i < 8; i++) { char b[8]; snprintf(b, sizeof b, "%02x", h[i]); m += b; }
      fail(1, "not a ckpt image: bad magic %s (expected 434b5054494d4700)", m.c_str());
    }
    major_ = le16(&h[8]);
    minor_ = le16(&h[10]);
    // The version before the CRC: a later major may lay out its header otherwise.
    if (major_ != kSupportedMajor)
      fail(2, "unsupported image format version %d.%d: this reader supports format major version %d only",
           major_, minor_, kSupportedMajor);
    uint32_t want = crc32(h.data(), 28);
    if (want != le32(&h[28]))
      fail(1, "file header CRC mismatch: stored 0x%08x, computed 0x%08x", le32(&h[28]), want);
    flags_ = le32(&h[12]);
  }

  std::optional<CommitRec> commit_at(uint64_t off) const {
    auto h = record_header(off);
    if (!h || h->kind != kCommit || h->length != kCommitPayload || off + kRecordLen + kCommitPayload > size_)
      return std::nullopt;
    auto p = read_at(off + kRecordLen, kCommitPayload);
    if (crc32(p) != h->payload_crc || memcmp(&p[32], "CKPTEND\0", 8) != 0) return std::nullopt;
    CommitRec c{le64(&p[0]), le64(&p[8]), le64(&p[16]), le64(&p[24])};
    if (c.end != off + kRecordLen + kCommitPayload) return std::nullopt;
    return c;
  }

  void find_commit() {
    // Fast path: the file ends with a valid commit whose end is the file length.
    if (size_ >= kHeaderLen + kRecordLen + kCommitPayload) {
      uint64_t tail = size_ - kRecordLen - kCommitPayload;
      if (tail % 8 == 0) {
        auto c = commit_at(tail);
        if (c && c->end == size_) {
          commit_ = *c;
          commit_offset_ = tail;
          commit_path_ = "fast path";
          return;
        }
      }
    }
    // Scan (a torn append): walk the records, keep the last valid commit.
    uint64_t off = kHeaderLen;
    int scanned = 0;
    std::optional<CommitRec> last;
    uint64_t last_off = 0;
    while (auto h = record_header(off)) {
      if (h->length > size_ || off + kRecordLen + h->length > size_) break;
      scanned++;
      if (h->kind == kCommit) {
        auto c = commit_at(off);
        if (!c) break;
        commits_seen_++;
        last = c;
        last_off = off;
      }
      off = align8(off + kRecordLen + h->length);
    }
    if (!last)
      fail(1, "no complete commit in the image (truncated or damaged; %" PRIu64 " bytes, %d valid records before the damage)",
           size_, scanned);
    commit_ = *last;
    commit_offset_ = last_off;
    commit_path_ = "scan";
  }

  void read_metadata() {
    uint64_t off = commit_.meta_off;
    std::optional<RecordHeader> h;
    if (off >= kHeaderLen && off % 8 == 0) h = record_header(off);
    if (!h)
      fail(1, "commit at offset %" PRIu64 " points at offset %" PRIu64 ", where there is no valid record",
           commit_offset_, off);
    if (h->kind != kMetadata) fail(1, "commit points at a record of kind %u, not metadata", h->kind);
    if (h->length != commit_.meta_len)
      fail(1, "metadata record holds %" PRIu64 " bytes, the commit says %" PRIu64, h->length, commit_.meta_len);
    if (h->length > kMaxMetadata) fail(1, "metadata of %" PRIu64 " bytes is over the 1 GiB limit", h->length);
    if (off + kRecordLen + h->length > commit_offset_) fail(1, "metadata record overlaps its commit");
    metadata_ = read_at(off + kRecordLen, h->length);
    uint32_t want = crc32(metadata_);
    if (want != h->payload_crc)
      fail(1, "metadata CRC mismatch: stored 0x%08x, computed 0x%08x", h->payload_crc, want);
    metadata_offset_ = off;
  }
};

// ---------------------------------------------------------------------------
// The metadata, copied out of the message once (spec/format.md section 9:
// the traversal limit is a budget for one walk).
// ---------------------------------------------------------------------------

struct FrameInfo {
  uint64_t offset;
  uint32_t stored, size, crc;
  ckpt::Codec codec;
};

struct VmaInfo {
  uint64_t start, end;
  uint32_t prot;
  bool shared;
  ckpt::VmaBacking::Which kind;
  uint64_t offset = 0, dev = 0, inode = 0, shm_id = 0;
  ckpt::ShmKind shm_kind = ckpt::ShmKind::ANONYMOUS_SHARED;
  ckpt::SpecialMapping special = ckpt::SpecialMapping::OTHER;
  std::string name, file_path;
};

struct RunInfo {
  uint64_t start;
  uint32_t pages;
  ckpt::RunKind kind;
  uint32_t frame, frame_offset;
  bool data() const { return kind == ckpt::RunKind::DATA; }
};

struct ThreadInfo {
  int32_t tid;
  std::string comm, state;
  bool x8664 = false;
  std::map<std::string, uint64_t> regs;
  size_t xsave = 0;
  uint64_t xfeatures = 0, blocked = 0, alt_sp = 0, alt_size = 0;
  uint32_t alt_flags = 0;
  size_t pending = 0;
};

struct FdInfo {
  int32_t fd;
  bool cloexec;
  uint32_t file;
};

struct ProcInfo {
  int32_t pid, ppid, pgid, sid;
  std::string state, comm, exe, cwd, root;
  bool exe_deleted;
  uint64_t exe_dev, exe_inode;
  std::vector<std::string> cmdline;
  uint32_t umask, ruid, euid, suid, rgid, egid, sgid;
  std::vector<int32_t> children;
  std::vector<ThreadInfo> threads;
  std::vector<VmaInfo> vmas;
  std::vector<RunInfo> runs;
  std::vector<FdInfo> fds;
};

struct FileInfo {
  uint32_t id, flags;
  uint64_t position;
  std::string path, kind, extra;
  bool memfd = false;
  uint64_t memfd_id = 0, blob_size = 0;
  std::vector<uint32_t> blob_frames;
};

struct Model {
  int format_major, format_minor;
  std::string tool;
  int64_t created_ns;
  uint32_t generation;
  std::string parent_path;
  int32_t root_pid;
  uint64_t freeze_ns;
  std::string hostname, kernel, arch, boot_id, vendor, model_name;
  uint32_t page_size, family, model, stepping, xsave_size;
  uint64_t xcr0;
  size_t cpu_flags;
  std::vector<FrameInfo> frames;
  std::vector<std::pair<std::string, std::string>> notes;
  std::vector<ProcInfo> procs;
  std::map<uint32_t, FileInfo> files;
};

const char* const kRegNames[27] = {"r15", "r14", "r13", "r12", "rbp",      "rbx", "r11", "r10", "r9",
                                   "r8",  "rax", "rcx", "rdx", "rsi",      "rdi", "orig_rax", "rip", "cs",
                                   "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs"};

void copy_thread(ckpt::Thread::Reader t, ThreadInfo& o) {
  o.tid = t.getTid();
  o.comm = text(t.getComm());
  o.state = text(t.getState());
  o.blocked = t.getBlocked();
  o.pending = t.getPending().size();
  auto a = t.getAltstack();
  o.alt_sp = a.getSp();
  o.alt_size = a.getSize();
  o.alt_flags = a.getFlags();
  auto regs = t.getRegs();
  if (regs.which() != ckpt::Registers::X8664) return;
  auto r = regs.getX8664();
  o.x8664 = true;
  const uint64_t v[27] = {r.getR15(), r.getR14(), r.getR13(), r.getR12(), r.getRbp(), r.getRbx(), r.getR11(),
                          r.getR10(), r.getR9(), r.getR8(), r.getRax(), r.getRcx(), r.getRdx(), r.getRsi(),
                          r.getRdi(), r.getOrigRax(), r.getRip(), r.getCs(), r.getEflags(), r.getRsp(),
                          r.getSs(), r.getFsBase(), r.getGsBase(), r.getDs(), r.getEs(), r.getFs(), r.getGs()};
  for (int i = 0; i < 27; i++) o.regs[kRegNames[i]] = v[i];
  o.xsave = r.getXsave().size();
  o.xfeatures = r.getXfeatures();
}

void copy_vma(ckpt::Vma::Reader v, VmaInfo& o) {
  o.start = v.getStart();
  o.end = v.getEnd();
  o.prot = v.getProt();
  o.shared = v.getShared();
  o.name = text(v.getName());
  auto b = v.getBacking();
  o.kind = b.which();
  switch (o.kind) {
    case ckpt::VmaBacking::FILE: {
      auto f = b.getFile();
      auto id = f.getFile();
      o.offset = f.getOffset();
      o.dev = id.getDev();
      o.inode = id.getInode();
      o.file_path = text(id.getPath());
      break;
    }
    case ckpt::VmaBacking::SHARED_MEMORY: {
      auto s = b.getSharedMemory();
      o.offset = s.getOffset();
      o.inode = o.shm_id = s.getId();
      o.shm_kind = s.getKind();
      break;
    }
    case ckpt::VmaBacking::SPECIAL:
      o.special = b.getSpecial();
      break;
    default:
      break;
  }
}

void copy_process(ckpt::Process::Reader p, ProcInfo& o) {
  o.pid = p.getPid();
  o.ppid = p.getPpid();
  o.pgid = p.getPgid();
  o.sid = p.getSid();
  o.state = text(p.getState());
  o.comm = text(p.getComm());
  auto exe = p.getExe();
  o.exe = text(exe.getPath());
  o.exe_deleted = exe.getDeleted();
  o.exe_dev = exe.getDev();
  o.exe_inode = exe.getInode();
  for (auto a : p.getCmdline()) o.cmdline.push_back(text(a));
  o.cwd = text(p.getCwd());
  o.root = text(p.getRoot());
  o.umask = p.getUmask();
  auto c = p.getCreds();
  o.ruid = c.getRuid(); o.euid = c.getEuid(); o.suid = c.getSuid();
  o.rgid = c.getRgid(); o.egid = c.getEgid(); o.sgid = c.getSgid();
  for (auto ch : p.getChildren()) o.children.push_back(ch);
  for (auto t : p.getThreads()) { o.threads.emplace_back(); copy_thread(t, o.threads.back()); }
  for (auto v : p.getVmas()) { o.vmas.emplace_back(); copy_vma(v, o.vmas.back()); }
  for (auto r : p.getMemory())
    o.runs.push_back(RunInfo{r.getStart(), r.getPages(), r.getKind(), r.getFrame(), r.getFrameOffset()});
  for (auto f : p.getFds()) o.fds.push_back(FdInfo{f.getFd(), f.getCloexec(), f.getFile()});
}

// The name of the open file's kind as the schema spells it ("regular",
// "unixSocket", ...), by reflection: kinds added by later minors print
// their own names.
std::string kind_name(ckpt::OpenFile::Reader f) {
  auto kind = capnp::toDynamic(f).get("kind").as<capnp::DynamicStruct>();
  KJ_IF_MAYBE(field, kind.which()) { return std::string(field->getProto().getName().cStr()); }
  return "unknown";
}

void copy_file(ckpt::OpenFile::Reader f, FileInfo& o) {
  o.id = f.getId();
  o.flags = f.getFlags();
  o.position = f.getPosition();
  o.path = text(f.getPath());
  auto k = f.getKind();
  o.kind = kind_name(f);
  char b[128];
  auto blob = [&](ckpt::Blob::Reader bl) {
    o.blob_size = bl.getSize();
    for (auto i : bl.getFrames()) o.blob_frames.push_back(i);
  };
  using K = ckpt::OpenFile::Kind;
  switch (k.which()) {
    case K::PIPE:
    case K::FIFO: {
      auto p = k.which() == K::PIPE ? k.getPipe() : k.getFifo();
      snprintf(b, sizeof b, " %s end, %zu bytes buffered", p.getEnd() == ckpt::PipeEnd::READ ? "read" : "write",
               size_t(p.getData().size()));
      o.extra = b;
      break;
    }
    case K::EVENTFD:
      snprintf(b, sizeof b, " count %" PRIu64, k.getEventfd().getCount());
      o.extra = b;
      break;
    case K::REGULAR:
      if (k.getRegular().getHasContents()) {
        blob(k.getRegular().getContents());
        snprintf(b, sizeof b, " (contents saved, %" PRIu64 " bytes)", o.blob_size);
        o.extra = b;
      }
      break;
    case K::MEMFD:
      o.memfd = true;
      o.memfd_id = k.getMemfd().getId();
      blob(k.getMemfd().getContents());
      break;
    default:
      break;
  }
}

std::string codec_name(ckpt::Codec c) {
  switch (c) {
    case ckpt::Codec::NONE: return "none";
    case ckpt::Codec::ZSTD: return "zstd";
    case ckpt::Codec::LZ4: return "lz4";
  }
  return "codec " + std::to_string(unsigned(c));
}

const char* arch_name(ckpt::Arch a) {
  switch (a) {
    case ckpt::Arch::X8664: return "x8664";
    case ckpt::Arch::AARCH64: return "aarch64";
    default: return "unknown";
  }
}

// The payload is exactly one message: whole words, as long as its segment
// table says (spec/format.md section 3).
void check_one_message(const std::vector<uint8_t>& p) {
  if (p.size() % 8)
    fail(1, "the metadata payload is %zu bytes, not a whole number of 8-byte words", p.size());
  if (p.size() < 8) fail(1, "the metadata payload is empty");
  uint64_t count = uint64_t(le32(&p[0])) + 1;
  uint64_t header_words = count / 2 + 1;
  if (count > 512 || header_words * 8 > p.size())
    fail(1, "the metadata message's segment table (%" PRIu64 " segments) does not fit", count);
  uint64_t words = header_words;
  for (uint64_t i = 0; i < count; i++) words += le32(&p[4 + 4 * i]);
  if (words * 8 < p.size())
    fail(1, "%" PRIu64 " bytes follow the metadata message in its record", p.size() - words * 8);
  if (words * 8 > p.size())
    fail(1, "the metadata message needs %" PRIu64 " bytes, its record holds %zu", words * 8, p.size());
}

Model decode(const Container& c) {
  check_one_message(c.metadata_);
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>(c.metadata_.size() / 8);
  memcpy(words.begin(), c.metadata_.data(), c.metadata_.size());
  capnp::ReaderOptions opts;
  opts.traversalLimitInWords = 4 * words.size() + 1024;  // one walk (spec/format.md section 9)
  opts.nestingLimit = 64;
  capnp::FlatArrayMessageReader msg(words.asPtr(), opts);
  if (msg.getEnd() != words.end())
    fail(1, "%zu bytes follow the metadata message in its record",
         size_t(words.end() - msg.getEnd()) * sizeof(capnp::word));
  auto img = msg.getRoot<ckpt::Image>();
  Model m;
  m.format_major = img.getFormatMajor();
  m.format_minor = img.getFormatMinor();
  m.tool = text(img.getToolVersion());
  m.created_ns = img.getCreatedNs();
  m.generation = img.getGeneration();
  m.parent_path = text(img.getParent().getPath());
  m.root_pid = img.getRootPid();
  m.freeze_ns = img.getFreezeNs();
  auto h = img.getHost();
  m.hostname = text(h.getHostname());
  m.kernel = text(h.getKernelRelease());
  m.arch = arch_name(h.getArch());
  m.boot_id = text(h.getBootId());
  m.page_size = h.getPageSize();
  auto cpu = h.getCpu();
  m.vendor = text(cpu.getVendor());
  m.model_name = text(cpu.getModelName());
  m.family = cpu.getFamily();
  m.model = cpu.getModel();
  m.stepping = cpu.getStepping();
  m.xcr0 = cpu.getXcr0();
  m.xsave_size = cpu.getXsaveSize();
  m.cpu_flags = cpu.getFlags().size();
  for (auto f : img.getFrames())
    m.frames.push_back(FrameInfo{f.getOffset(), f.getStoredSize(), f.getSize(), f.getCrc32(), f.getCodec()});
  for (auto n : img.getNotes()) m.notes.emplace_back(text(n.getKey()), text(n.getValue()));
  for (auto p : img.getProcesses()) { m.procs.emplace_back(); copy_process(p, m.procs.back()); }
  for (auto f : img.getFiles()) { FileInfo fi; copy_file(f, fi); m.files[fi.id] = fi; }
  return m;
}

// ---------------------------------------------------------------------------
// Checks and reads
// ---------------------------------------------------------------------------

class Reader {
 public:
  Reader(const Container& c, Model m) : c_(c), m_(std::move(m)) { validate(); }

  // The container-level checks of spec/format.md section 8.
  void validate() {
    if (m_.generation != c_.commit_.generation)
      fail(1, "the commit record says generation %" PRIu64 " but its metadata says %u", c_.commit_.generation,
           m_.generation);
    if (m_.format_major != kSupportedMajor)
      fail(2, "the metadata says format %d.%d: this reader supports format major version %d only",
           m_.format_major, m_.format_minor, kSupportedMajor);
    uint32_t ps = m_.page_size;
    if (ps < 4096 || ps > 65536 || (ps & (ps - 1)))
      fail(1, "host.pageSize %u is not a power of two in 4096..65536", ps);
    uint64_t end = kHeaderLen + kRecordLen;
    for (size_t i = 0; i < m_.frames.size(); i++) {
      const auto& f = m_.frames[i];
      if (f.offset < end) fail(1, "frame %zu at offset %" PRIu64 " is out of file order or overlaps the one before", i, f.offset);
      end = f.offset + f.stored;
      if (end > c_.metadata_offset_) fail(1, "frame %zu does not lie before the metadata record", i);
      if (f.stored > kMaxFrame || f.size > kMaxFrame) fail(1, "frame %zu is larger than 64 MiB", i);
      if (f.codec == ckpt::Codec::NONE && f.size != f.stored)
        fail(1, "raw frame %zu: size %u != storedSize %u", i, f.size, f.stored);
      end += kRecordLen;
    }
    for (const auto& p : m_.procs) check_runs(p);
  }

  void check_runs(const ProcInfo& p) {
    uint64_t ps = m_.page_size;
    std::vector<std::pair<uint64_t, uint64_t>> spans;
    for (const auto& v : p.vmas) {
      if (v.start >= v.end || v.start % ps || v.end % ps)
        fail(1, "pid %d: bad vma 0x%" PRIx64 "-0x%" PRIx64, p.pid, v.start, v.end);
      if (!spans.empty() && v.start < spans.back().second)
        fail(1, "pid %d: vma 0x%" PRIx64 "-0x%" PRIx64 " overlaps or precedes the one before", p.pid, v.start, v.end);
      if (!spans.empty() && v.start == spans.back().second) spans.back().second = v.end;
      else spans.emplace_back(v.start, v.end);
    }
    uint64_t prev_end = 0;
    for (const auto& r : p.runs) {
      uint64_t len = uint64_t(r.pages) * ps;
      if (r.pages == 0 || r.start % ps || r.start < prev_end || r.start + len < r.start)
        fail(1, "pid %d: memory run at 0x%" PRIx64 " (%u pages) is empty, unaligned, out of order or overlapping",
             p.pid, r.start, r.pages);
      uint64_t end = r.start + len;
      prev_end = end;
      bool inside = std::any_of(spans.begin(), spans.end(),
                                [&](auto& s) { return s.first <= r.start && end <= s.second; });
      if (!inside) fail(1, "pid %d: memory run 0x%" PRIx64 "-0x%" PRIx64 " is not inside the vmas", p.pid, r.start, end);
      if (r.data()) {
        if (r.frame >= m_.frames.size())
          fail(1, "pid %d: run at 0x%" PRIx64 " refers to frame %u of %zu", p.pid, r.start, r.frame, m_.frames.size());
        if (uint64_t(r.frame_offset) + len > m_.frames[r.frame].size)
          fail(1, "pid %d: run at 0x%" PRIx64 " (%u pages) overruns frame %u", p.pid, r.start, r.pages, r.frame);
      }
    }
  }

  // The decoded bytes of frame i (both CRCs checked, size checked).
  const std::vector<uint8_t>& frame(uint32_t i) {
    if (i >= m_.frames.size()) fail(1, "frame %u: the image lists %zu", i, m_.frames.size());
    if (cached_ == int64_t(i)) return cache_;
    const auto& f = m_.frames[i];
    auto stored = c_.frame_stored(i, f.offset, f.stored, f.crc);
    std::vector<uint8_t> out(f.size);
    switch (f.codec) {
      case ckpt::Codec::NONE:
        out = std::move(stored);
        break;
      case ckpt::Codec::ZSTD: {
        size_t n = ZSTD_decompress(out.data(), out.size(), stored.data(), stored.size());
        if (ZSTD_isError(n)) fail(1, "frame %u: zstd: %s", i, ZSTD_getErrorName(n));
        if (n != f.size) fail(1, "frame %u: decodes to %zu bytes, metadata says %u", i, n, f.size);
        break;
      }
      case ckpt::Codec::LZ4: {
        int n = LZ4_decompress_safe(reinterpret_cast<const char*>(stored.data()), reinterpret_cast<char*>(out.data()),
                                    int(stored.size()), int(out.size()));
        if (n < 0) fail(1, "frame %u: lz4: the block is damaged", i);
        if (uint32_t(n) != f.size) fail(1, "frame %u: decodes to %d bytes, metadata says %u", i, n, f.size);
        break;
      }
      default:
        fail(1, "frame %u: unknown codec %u", i, unsigned(f.codec));
    }
    cache_ = std::move(out);
    cached_ = i;
    return cache_;
  }

  void verify_frames() {
    for (uint32_t i = 0; i < m_.frames.size(); i++) frame(i);
  }

  std::vector<uint8_t> blob(const FileInfo& f) {
    std::vector<uint8_t> out;
    int64_t last = -1;
    for (uint32_t i : f.blob_frames) {
      if (int64_t(i) <= last) fail(1, "blob frame indices do not strictly increase");
      last = i;
      const auto& d = frame(i);
      out.insert(out.end(), d.begin(), d.end());
    }
    if (out.size() < f.blob_size) fail(1, "blob of %" PRIu64 " bytes: its frames hold only %zu", f.blob_size, out.size());
    out.resize(f.blob_size);
    return out;
  }

  void print_all();
  const ProcInfo& find_process(std::optional<int> pid);
  std::pair<std::string, std::optional<std::vector<uint8_t>>> page(const ProcInfo& p, uint64_t addr);
  uint32_t page_size() const { return m_.page_size; }

 private:
  void print_process(const ProcInfo& p);
  void print_thread(const ThreadInfo& t);
  void print_maps(const ProcInfo& p);
  void print_fds(const ProcInfo& p);

  const Container& c_;
  Model m_;
  std::vector<uint8_t> cache_;
  int64_t cached_ = -1;
};

// Print a line that may hold any byte (NULs too: printf's %s would stop there).
void put(const std::string& line) {
  fwrite(line.data(), 1, line.size(), stdout);
  fputc('\n', stdout);
}

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char b[1024];
  va_list ap;
  va_start(ap, f);
  vsnprintf(b, sizeof b, f, ap);
  va_end(ap);
  return b;
}

std::string fmt_time(int64_t ns) {
  if (!ns) return "0";
  time_t secs = time_t(ns / 1000000000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char b[64], out[96];
  strftime(b, sizeof b, "%Y-%m-%d %H:%M:%S", &tm);
  snprintf(out, sizeof out, "%s.%09" PRId64 " UTC", b, ns % 1000000000);
  return out;
}

// shlex.quote, as the Python reader prints argv.
std::string quote(const std::string& s) {
  if (s.empty()) return "''";
  bool safe = std::all_of(s.begin(), s.end(), [](char ch) {
    return isalnum(static_cast<unsigned char>(ch)) || strchr("@%+=:,./-_", ch);
  });
  if (safe) return s;
  std::string out = "'";
  for (char ch : s) out += ch == '\'' ? std::string("'\"'\"'") : std::string(1, ch);
  return out + "'";
}

void Reader::print_all() {
  const auto& c = c_;
  printf("image       %s (%" PRIu64 " bytes)\n", c.path_.c_str(), c.size_);
  // The version to report: the greater minor (spec/format.md section 10).
  printf("format      %d.%d (header %d.%d, flags 0x%x; metadata written for %d.%d)\n", c.major_,
         std::max(c.minor_, m_.format_minor), c.major_, c.minor_, c.flags_, m_.format_major, m_.format_minor);
  std::string seen = c.commit_path_ == "scan" ? ", " + std::to_string(c.commits_seen_) + " commit(s) seen" : "";
  printf("commit      generation %" PRIu64 " at offset %" PRIu64 " (%s%s); metadata record at %" PRIu64 ", %zu bytes\n",
         c.commit_.generation, c.commit_offset_, c.commit_path_.c_str(), seen.c_str(), c.metadata_offset_,
         c.metadata_.size());
  printf("tool        %s\n", m_.tool.c_str());
  printf("created     %s\n", fmt_time(m_.created_ns).c_str());
  printf("generation  %u\n", m_.generation);
  printf("root pid    %d\n", m_.root_pid);
  printf("frozen for  %.3f ms\n", double(m_.freeze_ns) / 1e6);
  auto q = [](const std::string& s) { return s.empty() ? std::string("?") : s; };
  printf("host        %s, kernel %s, %s, page size %u, boot id %s\n", q(m_.hostname).c_str(), q(m_.kernel).c_str(),
         m_.arch.c_str(), m_.page_size, q(m_.boot_id).c_str());
  printf("cpu         %s %s (family %u model %u stepping %u), xcr0 0x%" PRIx64 ", xsave %u bytes, %zu flags\n",
         q(m_.vendor).c_str(), q(m_.model_name).c_str(), m_.family, m_.model, m_.stepping, m_.xcr0, m_.xsave_size,
         m_.cpu_flags);
  uint64_t stored = 0, decoded = 0;
  std::set<std::string> codecs;
  for (const auto& f : m_.frames) {
    stored += f.stored;
    decoded += f.size;
    codecs.insert(codec_name(f.codec));
  }
  std::string cl;
  for (const auto& n : codecs) cl += (cl.empty() ? "" : ", ") + n;
  printf("frames      %zu, %" PRIu64 " bytes stored, %" PRIu64 " bytes decoded (%s)\n", m_.frames.size(), stored,
         decoded, cl.empty() ? "-" : cl.c_str());
  for (const auto& n : m_.notes) printf("note        %s = %s\n", n.first.c_str(), n.second.c_str());
  for (const auto& p : m_.procs) print_process(p);
}

void Reader::print_process(const ProcInfo& p) {
  put(fmt("\nprocess pid=%d ppid=%d pgid=%d sid=%d state=%s comm=", p.pid, p.ppid, p.pgid, p.sid,
          p.state.empty() ? "?" : p.state.c_str()) + p.comm);
  if (!p.exe.empty())
    put("  exe       " + p.exe + (p.exe_deleted ? " (deleted)" : "") +
        fmt(" (dev %s inode %" PRIu64 ")", dev_str(p.exe_dev).c_str(), p.exe_inode));
  std::string argv;
  for (const auto& a : p.cmdline) argv += (argv.empty() ? "" : " ") + quote(a);
  put("  cmdline   " + argv);
  put("  cwd       " + (p.cwd.empty() ? "?" : p.cwd) + "   root " + (p.root.empty() ? "?" : p.root) +
      fmt("   umask %04o", p.umask));
  printf("  creds     uid %u/%u/%u gid %u/%u/%u\n", p.ruid, p.euid, p.suid, p.rgid, p.egid, p.sgid);
  if (!p.children.empty()) {
    printf("  children ");
    for (auto ch : p.children) printf(" %d", ch);
    printf("\n");
  }
  printf("  threads   %zu\n", p.threads.size());
  for (const auto& t : p.threads) print_thread(t);
  print_maps(p);
  print_fds(p);
}

void Reader::print_thread(const ThreadInfo& t) {
  put(fmt("  thread tid=%d comm=", t.tid) + t.comm + " state=" + (t.state.empty() ? "?" : t.state));
  static const std::vector<std::vector<const char*>> rows = {
      {"rip", "rsp", "rbp", "eflags"},  {"rax", "rbx", "rcx", "rdx"},          {"rsi", "rdi", "r8", "r9"},
      {"r10", "r11", "r12", "r13"},     {"r14", "r15", "orig_rax", "fs_base"}, {"gs_base", "cs", "ss", "ds"},
      {"es", "fs", "gs"}};
  if (t.x8664) {
    for (const auto& row : rows) {
      std::string line = "   ";
      for (const char* n : row) {
        char b[64];
        snprintf(b, sizeof b, " %-8s 0x%016" PRIx64 " ", (std::string(n) + "=").c_str(), t.regs.at(n));
        line += b;
      }
      line.pop_back();
      printf("%s\n", line.c_str());
    }
    printf("    xsave    %zu bytes, xfeatures 0x%" PRIx64 "\n", t.xsave, t.xfeatures);
  } else {
    printf("    registers: none\n");
  }
  printf("    blocked  0x%016" PRIx64 "  pending %zu  altstack sp=0x%" PRIx64 " size=%" PRIu64 " flags=0x%x\n", t.blocked,
         t.pending, t.alt_sp, t.alt_size, t.alt_flags);
}

void Reader::print_maps(const ProcInfo& p) {
  uint64_t ps = m_.page_size, covered = 0, total = 0, data_pages = 0, zero_pages = 0;
  printf("  memory map (%zu vmas; saved = bytes stored in frames, zero = all-zero pages not stored)\n", p.vmas.size());
  for (const auto& v : p.vmas) {
    uint64_t data = 0, zero = 0, other = 0;
    for (const auto& r : p.runs) {
      uint64_t lo = std::max(v.start, r.start), hi = std::min(v.end, r.start + uint64_t(r.pages) * ps);
      if (lo >= hi) continue;
      // guard pages and pages in the parent image (1.2) are neither
      (r.kind == ckpt::RunKind::DATA ? data : r.kind == ckpt::RunKind::ZERO ? zero : other) += hi - lo;
    }
    covered += data + zero + other;
    char perms[5] = {v.prot & 1 ? 'r' : '-', v.prot & 2 ? 'w' : '-', v.prot & 4 ? 'x' : '-', v.shared ? 's' : 'p', 0};
    std::string name = v.name.empty() && v.kind == ckpt::VmaBacking::FILE ? v.file_path : v.name;
    std::string line = fmt("%012" PRIx64 "-%012" PRIx64 " %s %08" PRIx64 " %s %-8" PRIu64 " ", v.start, v.end,
                           perms, v.offset, dev_str(v.dev).c_str(), v.inode) + name;
    if (line.size() < 100) line.resize(100, ' ');
    put("    " + line + fmt(" saved %" PRIu64 " zero %" PRIu64, data, zero));
  }
  uint64_t guard_pages = 0, parent_pages = 0;
  for (const auto& r : p.runs) {
    total += uint64_t(r.pages) * ps;
    switch (r.kind) {
      case ckpt::RunKind::DATA: data_pages += r.pages; break;
      case ckpt::RunKind::ZERO: zero_pages += r.pages; break;
      case ckpt::RunKind::GUARD: guard_pages += r.pages; break;
      case ckpt::RunKind::PARENT: parent_pages += r.pages; break;
      default: break;  // a kind of a later minor
    }
  }
  std::string more;
  if (guard_pages) more += fmt(", %" PRIu64 " guard pages", guard_pages);
  if (parent_pages) more += fmt(", %" PRIu64 " pages in the parent image", parent_pages);
  printf("  memory runs %zu: %" PRIu64 " data pages (%" PRIu64 " bytes), %" PRIu64 " zero pages%s\n", p.runs.size(),
         data_pages, data_pages * ps, zero_pages, more.c_str());
  if (covered != total) printf("  warning: %" PRIu64 " bytes of memory runs lie outside every vma\n", total - covered);
}

void Reader::print_fds(const ProcInfo& p) {
  if (p.fds.empty()) return;
  printf("  fds %zu\n", p.fds.size());
  for (const auto& fd : p.fds) {
    auto it = m_.files.find(fd.file);
    if (it == m_.files.end()) {
      printf("    %3d -> open file %u (missing from Image.files)\n", fd.fd, fd.file);
      continue;
    }
    const auto& f = it->second;
    put(fmt("    %3d -> ", fd.fd) + f.path + "  [" + f.kind + f.extra +
        fmt(", flags 0o%o, pos %" PRIu64 "%s]", f.flags, f.position, fd.cloexec ? ", cloexec" : ""));
  }
}

const ProcInfo& Reader::find_process(std::optional<int> pid) {
  if (m_.procs.empty()) fail(1, "the image holds no process");
  if (!pid) {
    for (const auto& p : m_.procs)
      if (p.pid == m_.root_pid) return p;
    return m_.procs[0];
  }
  for (const auto& p : m_.procs)
    if (p.pid == *pid) return p;
  fail(2, "no process %d in the image", *pid);
}

// (what the page is, its bytes when the image can give them)
std::pair<std::string, std::optional<std::vector<uint8_t>>> Reader::page(const ProcInfo& p, uint64_t addr) {
  uint64_t ps = m_.page_size, base = addr - addr % ps;
  char b[512];
  for (const auto& r : p.runs) {
    if (r.start <= base && base < r.start + uint64_t(r.pages) * ps) {
      if (r.kind == ckpt::RunKind::ZERO) return {"zero page (not stored)", std::vector<uint8_t>(ps)};
      if (r.kind == ckpt::RunKind::GUARD)
        return {"guard page (MADV_GUARD_INSTALL): no contents, reading it faults", std::nullopt};
      if (r.kind == ckpt::RunKind::PARENT)
        return {"saved in the parent image " + m_.parent_path + ", not in this file", std::nullopt};
      const auto& d = frame(r.frame);
      uint64_t off = r.frame_offset + (base - r.start);
      snprintf(b, sizeof b, "stored in frame %u (%s) at offset %" PRIu64, r.frame,
               codec_name(m_.frames[r.frame].codec).c_str(), off);
      return {b, std::vector<uint8_t>(d.begin() + off, d.begin() + off + ps)};
    }
  }
  for (const auto& v : p.vmas) {
    if (!(v.start <= base && base < v.end)) continue;
    using W = ckpt::VmaBacking;
    bool zero = v.kind == W::ANONYMOUS ||
                (v.kind == W::SPECIAL && (v.special == ckpt::SpecialMapping::HEAP || v.special == ckpt::SpecialMapping::STACK)) ||
                (v.kind == W::SHARED_MEMORY && v.shm_kind == ckpt::ShmKind::ANONYMOUS_SHARED);
    if (zero) return {"no run: zero (anonymous memory never touched, or dropped as zero)", std::vector<uint8_t>(ps)};
    if (v.kind == W::FILE) {
      snprintf(b, sizeof b, "no run: the bytes of %s at offset %" PRIu64 " (not in the image)", v.file_path.c_str(),
               v.offset + (base - v.start));
      return {b, std::nullopt};
    }
    if (v.kind == W::SHARED_MEMORY) {
      uint64_t off = v.offset + (base - v.start);
      if (v.shm_kind == ckpt::ShmKind::MEMFD) {
        for (const auto& [id, f] : m_.files) {
          if (!f.memfd || f.memfd_id != v.shm_id) continue;
          auto data = blob(f);
          std::vector<uint8_t> page(ps);
          if (off < data.size()) std::copy(data.begin() + off, data.begin() + std::min<uint64_t>(off + ps, data.size()), page.begin());
          snprintf(b, sizeof b, "no run: memfd (id %" PRIu64 ") contents at offset %" PRIu64, v.shm_id, off);
          return {b, page};
        }
        return {"no run: memfd no fd held: zero", std::vector<uint8_t>(ps)};
      }
      snprintf(b, sizeof b, "no run: shared memory id %" PRIu64 " at offset %" PRIu64 ", not in the image", v.shm_id, off);
      return {b, std::nullopt};
    }
    return {"no run: provided by the kernel at restore, never saved", std::nullopt};
  }
  fail(2, "0x%" PRIx64 " is not mapped in process %d", addr, p.pid);
}

void hexdump(const std::vector<uint8_t>& d, uint64_t base) {
  bool starred = false;
  for (size_t i = 0; i < d.size(); i += 16) {
    if (i >= 16 && memcmp(&d[i], &d[i - 16], 16) == 0 && i + 16 < d.size()) {
      if (!starred) printf("*\n");
      starred = true;
      continue;
    }
    starred = false;
    std::string hx, asc;
    for (size_t k = 0; k < 16 && i + k < d.size(); k++) {
      char b[4];
      snprintf(b, sizeof b, "%s%02x", k ? " " : "", d[i + k]);
      hx += b;
      asc += (d[i + k] >= 0x20 && d[i + k] < 0x7f) ? char(d[i + k]) : '.';
    }
    printf("%016" PRIx64 "  %-48s |%s|\n", base + i, hx.c_str(), asc.c_str());
  }
}

int usage() {
  fprintf(stderr, "usage: ckpt_read IMAGE [--no-verify] [--page ADDR [--pid PID] [--raw]]\n");
  return 2;
}

int run(int argc, char** argv) {
  std::string image;
  std::optional<uint64_t> page_addr;
  std::optional<int> pid;
  bool raw = false, verify = true;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--raw") raw = true;
    else if (a == "--no-verify") verify = false;
    else if ((a == "--page" || a == "--pid") && i + 1 < argc) {
      char* end = nullptr;
      std::string v = argv[++i];
      if (a == "--page") {
        page_addr = strtoull(v.c_str(), &end, 16);
        if (v.empty() || *end) fail(2, "not a hex address: '%s'", v.c_str());
      } else {
        pid = int(strtol(v.c_str(), &end, 10));
        if (v.empty() || *end) fail(2, "not a pid: '%s'", v.c_str());
      }
    } else if (image.empty() && !a.empty() && a[0] != '-') image = a;
    else return usage();
  }
  if (image.empty()) return usage();
  Container c(image);
  Reader r(c, decode(c));
  if (verify) r.verify_frames();
  if (page_addr) {
    const auto& p = r.find_process(pid);
    auto [what, data] = r.page(p, *page_addr);
    uint64_t base = *page_addr - *page_addr % r.page_size();
    if (raw) {
      if (!data) fail(1, "page 0x%" PRIx64 " of pid %d: %s", base, p.pid, what.c_str());
      fwrite(data->data(), 1, data->size(), stdout);
      return 0;
    }
    printf("pid %d page 0x%" PRIx64 ": %s\n", p.pid, base, what.c_str());
    if (data) hexdump(*data, base);
    return 0;
  }
  r.print_all();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    int code = run(argc, argv);
    if (fflush(stdout) != 0 && errno != EPIPE) return 1;
    return code;
  } catch (const Failure& f) {
    fflush(stdout);
    fprintf(stderr, "ckpt_read: error: %s\n", f.msg.c_str());
    return f.code;
  } catch (const kj::Exception& e) {
    // A message the decoder refused (traversal limit, bad pointer, ...).
    fflush(stdout);
    fprintf(stderr, "ckpt_read: error: cannot decode the metadata message: %s\n", e.getDescription().cStr());
    return 1;
  } catch (const std::exception& e) {
    fprintf(stderr, "ckpt_read: error: %s\n", e.what());
    return 1;
  }
}
