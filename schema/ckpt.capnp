# ckpt image format, metadata schema.
#
# This file is the source of truth for the metadata message stored in every
# `.ckpt` image (see spec/format.md for the container around it).
#
# Evolution rules (format major 1):
#  * Fields and enumerants are only ever ADDED, with the next free ordinal.
#  * Nothing is renamed in a way that changes its meaning, removed, or
#    renumbered. A field that stops being written is marked "obsolete" in its
#    comment and keeps its ordinal.
#  * Adding fields bumps the format MINOR version. Readers ignore fields they
#    do not know. Anything a reader must understand to restore correctly, and
#    cannot be expressed as an additive field, needs a new MAJOR version.
#
# Units: addresses and sizes in bytes, times in nanoseconds since the Unix
# epoch (UTC) unless a field says otherwise. Strings that come from the
# kernel and may be arbitrary bytes (paths, argv, environ) are Data, not Text.

@0xd4126db261fdabb5;

$import "/capnp/c++.capnp".namespace("ckpt");

# ---------------------------------------------------------------------------
# Root
# ---------------------------------------------------------------------------

struct Image {
  formatMajor @0 :UInt16;        # container major version this message was written for
  formatMinor @1 :UInt16;        # schema minor version (fields known to the writer)
  toolVersion @2 :Text;          # e.g. "ckpt 0.1.0"
  createdNs @3 :Int64;           # dump time, ns since the epoch
  host @4 :HostInfo;
  processes @5 :List(Process);   # the saved tree; processes[0] is the root of the dump
  files @6 :List(OpenFile);      # open file descriptions, shared by fds via OpenFile.id
  frames @7 :List(Frame);        # page frames in the container (see MemoryRun)
  rootPid @8 :Int32;             # pid of the process the dump was asked for
  freezeNs @9 :UInt64;           # how long the tree was frozen while dumping
  generation @10 :UInt32;        # 0 for a fresh dump, +1 for every committed edit; equals the commit record's
  notes @11 :List(Note);         # free-form annotations (ckpt and ckptfs write none)
  # Since 1.2:
  locks @12 :List(FileLock);     # file locks and leases held by the saved processes
  seccompFilters @13 :List(SeccompFilter);  # every seccomp filter of the tree, once (see Thread.seccompFilter)
  sysvShm @14 :List(SysvShm);    # SysV shared memory segments the tree uses
  sysvSem @15 :List(SysvSem);    # SysV semaphore sets the tree uses
  sysvMsg @16 :List(SysvMsgQueue); # SysV message queues the tree uses
  imageId @17 :Data;             # 16 random bytes naming this dump (kept by edits); empty before 1.2
  parent @18 :ParentRef;         # incremental dump: the image holding the pages of runs of kind `parent`
  ptys @19 :List(PtyPair);       # pty pairs whose master is in the image (Tty.pair names one)
}

# The image an incremental dump was taken against (since 1.2).
struct ParentRef {
  imageId @0 :Data;              # the parent's Image.imageId; empty = no parent
  path @1 :Data;                 # where the parent was when this dump was taken (a hint, may be relative)
  createdNs @2 :Int64;           # the parent's createdNs
}

struct Note {
  key @0 :Text;
  value @1 :Text;
}

struct HostInfo {
  hostname @0 :Text;
  kernelRelease @1 :Text;        # uname -r
  arch @2 :Arch;
  pageSize @3 :UInt32;
  cpu @4 :CpuInfo;
  bootId @5 :Text;               # /proc/sys/kernel/random/boot_id at dump time
}

enum Arch {
  unknown @0;
  x8664 @1;
  aarch64 @2;
}

struct CpuInfo {
  vendor @0 :Text;               # e.g. "AuthenticAMD", "GenuineIntel"
  modelName @1 :Text;
  family @2 :UInt32;
  model @3 :UInt32;
  stepping @4 :UInt32;
  flags @5 :List(Text);          # /proc/cpuinfo "flags"
  xcr0 @6 :UInt64;               # XSAVE feature mask enabled by the OS (x86_64)
  xsaveSize @7 :UInt32;          # size of the XSAVE area for xcr0, bytes
}

# ---------------------------------------------------------------------------
# Processes and threads
# ---------------------------------------------------------------------------

struct Process {
  pid @0 :Int32;
  ppid @1 :Int32;
  pgid @2 :Int32;
  sid @3 :Int32;
  state @4 :Text;                # /proc/PID/stat state letter at freeze time
  comm @5 :Data;
  exe @6 :FileIdentity;          # /proc/PID/exe
  cmdline @7 :List(Data);        # argv, without terminating NULs
  environ @8 :List(Data);        # "KEY=VALUE" entries
  cwd @9 :Data;
  root @10 :Data;
  umask @11 :UInt32;
  rlimits @12 :List(Rlimit);
  creds @13 :Credentials;
  personality @14 :UInt32;
  mm @15 :MmLayout;
  vmas @16 :List(Vma);           # sorted by start address
  memory @17 :List(MemoryRun);   # saved page contents, sorted by start address
  sigactions @18 :List(SigAction);   # one per signal 1..64, index = signo - 1
  sharedPending @19 :List(SigInfo);  # process-wide pending signals, queue order
  itimers @20 :List(ITimer);     # ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF
  posixTimers @21 :List(PosixTimer);
  fds @22 :List(Fd);             # sorted by fd number
  threads @23 :List(Thread);     # threads[0] is the thread group leader
  children @24 :List(Int32);     # pids of saved child processes
  oomScoreAdj @25 :Int32;
  dumpable @26 :Bool;            # prctl(PR_GET_DUMPABLE) != 0
  childSubreaper @27 :Bool;
  parentDeathSignal @28 :Int32;  # prctl(PR_GET_PDEATHSIG)
  exitSignal @29 :Int32;         # signal sent to the parent on exit (usually 17)
  loginUid @30 :UInt32;
  timerSlackNs @31 :UInt64;
  thpDisabled @32 :Bool;         # prctl(PR_GET_THP_DISABLE)
  # Since 1.2:
  exitStatus @33 :Int32;         # a zombie (state "Z"): the wait status its parent's wait() returns
  shares @34 :SharedTables;      # kernel tables this process shares with another saved process
  cgroup @35 :Data;              # cgroup v2 path ("0::" line of /proc/PID/cgroup); empty = unknown
  membarrier @36 :UInt32;        # MEMBARRIER_CMD_GET_REGISTRATIONS bits
  cwdIdentity @37 :FileIdentity; # the current directory (deleted ones are recreated); path = cwd
  controllingTty @38 :UInt64;    # st_rdev of the controlling terminal (stat tty_nr); 0 = none
  ckptUffdFd @39 :Int32 = -1;    # fd ckpt left in the process for dirty-page tracking (not restored); -1 none
  stopSignal @40 :Int32;         # a stopped process (state "T"): the signal that stopped it; 0 = not known (SIGSTOP)
  cgroupsV1 @41 :List(CgroupPath);      # cgroup v1 membership, one per v1 hierarchy of /proc/PID/cgroup
  cgroupDirs @42 :List(CgroupDir);      # cgroup directories to make again where missing (see CgroupDir)
  cgroupNsRoots @43 :List(CgroupPath);  # its own cgroup namespace: the namespace's root per hierarchy; empty = the dumper's namespace
  mdwe @44 :UInt32;              # since 1.2: prctl(PR_GET_MDWE) flags (memory-deny-write-execute); 0 = none
  coredumpFilter @45 :UInt32;    # since 1.2: /proc/PID/coredump_filter; 0 = not saved (left as the kernel makes it)
}

# A cgroup of one hierarchy, as the dumper's cgroup namespace sees it.
struct CgroupPath {
  hierarchy @0 :Text;            # the controllers field of /proc/PID/cgroup ("cpu,cpuacct", "name=zdtmtst"); "" = cgroup v2
  path @1 :Data;                 # absolute path in that hierarchy ("/a/b")
}

# A cgroup directory of a hierarchy the process is in, outside the dumper's
# own cgroup there: the ancestors of the process's cgroup, that cgroup and
# its descendants (parents before children). Made again where missing.
struct CgroupDir {
  dir @0 :CgroupPath;
  mode @1 :UInt32;               # permission bits
  uid @2 :UInt32;
  gid @3 :UInt32;
  files @4 :List(CgroupFile);    # control files with a saved value or owner/mode other than the default
}

struct CgroupFile {
  name @0 :Text;                 # e.g. "memory.limit_in_bytes", "devices.list", "cgroup.procs"
  value @1 :Data;                # what reading it gave, when hasValue
  hasValue @2 :Bool;
  mode @3 :UInt32;               # permission bits
  uid @4 :UInt32;
  gid @5 :UInt32;
}

# Which saved process's kernel table a process shares (clone flags). 0: its
# own. The pid named is the one whose entry holds the table's contents.
struct SharedTables {
  files @0 :Int32;               # fd table (CLONE_FILES)
  fs @1 :Int32;                  # cwd, root, umask (CLONE_FS)
  sighand @2 :Int32;             # signal handlers (CLONE_SIGHAND)
  vm @3 :Int32;                  # address space (CLONE_VM without CLONE_THREAD; vfork)
  sysvsem @4 :Int32;             # SysV semaphore undo list (CLONE_SYSVSEM)
}

struct FileIdentity {
  path @0 :Data;                 # absolute path as the kernel printed it
  dev @1 :UInt64;                # st_dev as glibc's stat gives it (gnu_dev_makedev; spec/format.md section 7)
  inode @2 :UInt64;
  size @3 :UInt64;
  mtimeNs @4 :Int64;
  mode @5 :UInt32;               # st_mode
  deleted @6 :Bool;              # the link said " (deleted)"
  uid @7 :UInt32;
  gid @8 :UInt32;
  # Since 1.2:
  ctimeNs @9 :Int64;             # st_ctime: changes with any change of the contents (cannot be set)
  generation @10 :UInt64;        # inode generation (FS_IOC_GETVERSION), when hasGeneration
  hasGeneration @11 :Bool;
  atimeNs @12 :Int64;
  contentHash @13 :Data;         # SHA-256 of the contents when computed; empty otherwise
}

struct Rlimit {
  resource @0 :UInt32;           # RLIMIT_* number
  name @1 :Text;                 # e.g. "NOFILE", informative only
  soft @2 :UInt64;               # 0xffffffffffffffff = unlimited
  hard @3 :UInt64;
}

struct Credentials {
  ruid @0 :UInt32;
  euid @1 :UInt32;
  suid @2 :UInt32;
  fsuid @3 :UInt32;
  rgid @4 :UInt32;
  egid @5 :UInt32;
  sgid @6 :UInt32;
  fsgid @7 :UInt32;
  groups @8 :List(UInt32);
  capInheritable @9 :UInt64;
  capPermitted @10 :UInt64;
  capEffective @11 :UInt64;
  capBounding @12 :UInt64;
  capAmbient @13 :UInt64;
  securebits @14 :UInt32;
  noNewPrivs @15 :Bool;
  seccompMode @16 :UInt32;       # 0 none, 1 strict, 2 filter (filters are not saved in v1.0)
}

struct MmLayout {
  startCode @0 :UInt64;
  endCode @1 :UInt64;
  startData @2 :UInt64;
  endData @3 :UInt64;
  startBrk @4 :UInt64;
  brk @5 :UInt64;
  startStack @6 :UInt64;
  argStart @7 :UInt64;
  argEnd @8 :UInt64;
  envStart @9 :UInt64;
  envEnd @10 :UInt64;
  auxv @11 :List(AuxEntry);      # /proc/PID/auxv, up to and including AT_NULL
}

struct AuxEntry {
  key @0 :UInt64;
  value @1 :UInt64;
}

struct Thread {
  tid @0 :Int32;
  comm @1 :Data;
  state @2 :Text;
  regs @3 :Registers;
  blocked @4 :UInt64;            # blocked signal mask, bit (signo-1)
  pending @5 :List(SigInfo);     # thread-private pending signals, queue order
  altstack @6 :SigAltStack;
  clearChildTid @7 :UInt64;      # set_tid_address() value
  robustList @8 :RobustList;
  rseq @9 :Rseq;
  sched @10 :Sched;
  cpuAffinity @11 :List(UInt64); # sched_getaffinity bitmap, 64 cpus per word
  # Since 1.2:
  creds @12 :Credentials;        # the thread's own credentials, when hasCreds (they differ from the process's)
  hasCreds @13 :Bool;
  seccompFilter @14 :UInt32;     # 1 + index into Image.seccompFilters of the newest filter; 0 = none
  cgroupsV1 @15 :List(CgroupPath);  # the thread's cgroup v1 membership where it differs from its process's; empty = the process's
}

# One seccomp filter (since 1.2). Filters form chains: a thread runs its
# newest filter, then that filter's parent, and so on. Threads and
# processes that inherited the same chain point to the same entries.
struct SeccompFilter {
  parent @0 :UInt32;             # 1 + index of the filter installed before this one; 0 = none
  program @1 :Data;              # classic BPF: struct sock_filter[] as PTRACE_SECCOMP_GET_FILTER gives it
  flags @2 :UInt64;              # PTRACE_SECCOMP_GET_METADATA flags (SECCOMP_FILTER_FLAG_LOG, ...)
}

struct SigAltStack {
  sp @0 :UInt64;
  size @1 :UInt64;
  flags @2 :UInt32;              # SS_ONSTACK, SS_DISABLE, SS_AUTODISARM
}

struct RobustList {
  head @0 :UInt64;               # 0 when none is registered
  len @1 :UInt64;
}

struct Rseq {
  address @0 :UInt64;            # 0 when not registered
  length @1 :UInt32;
  signature @2 :UInt32;
  flags @3 :UInt32;
}

struct Sched {
  policy @0 :UInt32;             # SCHED_OTHER=0, FIFO=1, RR=2, BATCH=3, IDLE=5; | 0x40000000 SCHED_RESET_ON_FORK
  priority @1 :UInt32;           # rt priority
  nice @2 :Int32;
  ioprio @3 :UInt32;             # since 1.2: I/O priority, ioprio_get(IOPRIO_WHO_PROCESS, tid):
                                 # class << 13 | level (class 1 realtime, 2 best-effort, 3 idle);
                                 # 0 = none (follows nice)
}

# Architecture-specific register state. New architectures are new union
# members (a minor version bump).
struct Registers {
  union {
    none @0 :Void;
    x8664 @1 :X8664Regs;
  }
}

# Every general register of x86_64 as in struct user_regs_struct, by name,
# plus the XSAVE area as returned by PTRACE_GETREGSET(NT_X86_XSTATE).
struct X8664Regs {
  r15 @0 :UInt64;
  r14 @1 :UInt64;
  r13 @2 :UInt64;
  r12 @3 :UInt64;
  rbp @4 :UInt64;
  rbx @5 :UInt64;
  r11 @6 :UInt64;
  r10 @7 :UInt64;
  r9 @8 :UInt64;
  r8 @9 :UInt64;
  rax @10 :UInt64;
  rcx @11 :UInt64;
  rdx @12 :UInt64;
  rsi @13 :UInt64;
  rdi @14 :UInt64;
  origRax @15 :UInt64;           # syscall number when stopped in a syscall, else -1
  rip @16 :UInt64;
  cs @17 :UInt64;
  eflags @18 :UInt64;
  rsp @19 :UInt64;
  ss @20 :UInt64;
  fsBase @21 :UInt64;
  gsBase @22 :UInt64;
  ds @23 :UInt64;
  es @24 :UInt64;
  fs @25 :UInt64;
  gs @26 :UInt64;
  xsave @27 :Data;               # raw XSAVE area (legacy FXSAVE 512 B + header + components)
  xfeatures @28 :UInt64;         # XSTATE_BV of the area (components present)
}

# ---------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------

struct Vma {
  start @0 :UInt64;
  end @1 :UInt64;                # exclusive
  prot @2 :UInt32;               # PROT_READ=1 | PROT_WRITE=2 | PROT_EXEC=4
  shared @3 :Bool;               # MAP_SHARED (else MAP_PRIVATE)
  growsDown @4 :Bool;
  backing @5 :VmaBacking;
  madvise @6 :UInt64;            # bit set of MadviseFlag ordinals, from smaps VmFlags
  vmFlags @7 :List(Text);        # smaps VmFlags, verbatim (informative)
  name @8 :Data;                 # the last field of /proc/PID/maps, verbatim
  # Since 1.2:
  hugePageSize @9 :UInt64;       # hugetlb memory (MAP_HUGETLB, a hugetlbfs file): its page size; 0 = not hugetlb
}

struct VmaBacking {
  union {
    anonymous @0 :Void;
    file @1 :FileMapping;
    sharedMemory @2 :SharedMemory;
    special @3 :SpecialMapping;
    # Since 1.2:
    aioRing @4 :AioRing;         # an AIO context's ring (io_setup)
    packetRing @5 :Void;         # since 1.2, later: the rings of a packet socket
                                 # (PACKET_RX_RING/TX_RING), mapped whole from offset 0;
                                 # Vma.name is the socket's "socket:[INODE]", which an
                                 # fd of the same process holds (OpenFile.path). The
                                 # frames are not saved: the restored rings start empty.
  }
}

# The ring of an AIO context (io_setup(2)), mapped at vma.start: its pages
# are saved like any memory's (runs); the fields below are its header as
# the kernel and the process left it, which the restore needs before it
# writes the pages (a new context's ring is made to match them).
struct AioRing {
  nr @0 :UInt32;                 # number of io_event slots of the ring
  head @1 :UInt32;               # next event the process will take
  tail @2 :UInt32;               # next slot the kernel fills
}

struct FileMapping {
  file @0 :FileIdentity;
  offset @1 :UInt64;             # file offset of vma.start
  # Since 1.2:
  contents @2 :Blob;             # the whole file, when hasContents (a deleted file)
  hasContents @3 :Bool;
}

struct SharedMemory {
  kind @0 :ShmKind;
  id @1 :UInt64;                 # inode of the shmem object; same id = same memory
  offset @2 :UInt64;             # offset of vma.start into the object
  size @3 :UInt64;               # size of the object
  name @4 :Data;                 # e.g. "/dev/zero (deleted)", "/memfd:foo (deleted)"
}

enum ShmKind {
  anonymousShared @0;            # mmap(MAP_SHARED|MAP_ANONYMOUS)
  memfd @1;
  sysvShm @2;
  posixShm @3;                   # /dev/shm file
}

enum SpecialMapping {
  heap @0;                       # [heap]: anonymous, restored at the same place
  stack @1;                      # [stack]
  vdso @2;
  vvar @3;
  vvarVclock @4;
  vsyscall @5;
  uprobes @6;
  other @7;                      # an unknown [name]: see Vma.name
}

enum MadviseFlag {
  dontFork @0;                   # "dc"
  doNotDump @1;                  # "dd"
  wipeOnFork @2;                 # "wf"
  hugePage @3;                   # "hg"
  noHugePage @4;                 # "nh"
  mergeable @5;                  # "mg"
  sequential @6;                 # "sr"
  random @7;                     # "rr"
  locked @8;                     # "lo"
  lockOnFault @9;                # "lf" (mlock2 MLOCK_ONFAULT), since 1.2
}

# A run of consecutive pages of one process with saved contents.
# Pages of a vma not covered by any run have the contents the vma's backing
# gives them: zero for anonymous memory, the file's bytes for file mappings.
# A child's run may point at the same frame bytes as its parent's run at the
# same address: pages they still shared copy-on-write, stored once (and
# restored shared; spec/format.md "Pages shared copy-on-write").
struct MemoryRun {
  start @0 :UInt64;              # page-aligned virtual address
  pages @1 :UInt32;              # number of pages (host.pageSize each)
  kind @2 :RunKind;
  frame @3 :UInt32;              # index into Image.frames (kind == data)
  frameOffset @4 :UInt32;        # byte offset of `start` in the uncompressed frame
}

enum RunKind {
  data @0;                       # contents stored in a frame
  zero @1;                       # all-zero pages, nothing stored
  guard @2;                      # guard pages (MADV_GUARD_INSTALL): no contents, access faults (since 1.2)
  parent @3;                     # contents are those of the same pages in the parent image (since 1.2)
}

# A page frame record of the container: bytes of one or more runs, stored
# independently so that any page can be read without the rest.
struct Frame {
  offset @0 :UInt64;             # file offset of the frame's payload
  storedSize @1 :UInt32;         # bytes in the file
  size @2 :UInt32;               # bytes once decoded
  codec @3 :Codec;
  crc32 @4 :UInt32;              # CRC-32 (IEEE) of the stored bytes
}

# A byte string stored in page frames rather than in the metadata (file
# contents): the decoded frames, concatenated in order, truncated to size.
struct Blob {
  size @0 :UInt64;
  frames @1 :List(UInt32);       # indices into Image.frames
}

enum Codec {
  none @0;
  zstd @1;                       # one zstd frame (RFC 8878)
  lz4 @2;                        # one LZ4 block, no frame header (since 1.1)
}

# ---------------------------------------------------------------------------
# Signals and timers
# ---------------------------------------------------------------------------

struct SigAction {
  handler @0 :UInt64;            # SIG_DFL=0, SIG_IGN=1, else the address
  flags @1 :UInt64;              # SA_* (kernel sa_flags)
  restorer @2 :UInt64;
  mask @3 :UInt64;
}

# A queued signal as the kernel's 128-byte siginfo_t.
struct SigInfo {
  signo @0 :Int32;
  code @1 :Int32;
  raw @2 :Data;                  # all 128 bytes
}

struct ITimer {
  which @0 :UInt32;              # ITIMER_REAL=0, VIRTUAL=1, PROF=2
  intervalNs @1 :UInt64;
  valueNs @2 :UInt64;            # time to the next expiry; 0 = disarmed
}

struct PosixTimer {
  id @0 :Int32;                  # kernel timer id as returned by timer_create
  clock @1 :Int32;
  notify @2 :Int32;              # SIGEV_SIGNAL=0, NONE=1, THREAD_ID=4
  signo @3 :Int32;
  value @4 :UInt64;              # sigev_value
  notifyTid @5 :Int32;
  intervalNs @6 :UInt64;
  valueNs @7 :UInt64;            # time to next expiry; 0 = disarmed
  overrun @8 :Int32;
}

# ---------------------------------------------------------------------------
# File descriptors
# ---------------------------------------------------------------------------

struct Fd {
  fd @0 :Int32;
  cloexec @1 :Bool;
  file @2 :UInt32;               # OpenFile.id
}

# An open file description. Several fds, in one process or several, share
# one when they were dup()ed or inherited.
struct OpenFile {
  id @0 :UInt32;
  flags @1 :UInt32;              # open flags as in /proc/PID/fdinfo (O_ACCMODE, O_APPEND, O_NONBLOCK, ...)
  position @2 :UInt64;           # file offset
  path @3 :Data;                 # /proc/PID/fd link target
  kind :union {
    regular @4 :RegularFile;
    directory @5 :FileIdentity;
    pipe @6 :Pipe;
    fifo @7 :Pipe;
    unixSocket @8 :UnixSocket;
    inetSocket @9 :InetSocket;
    tty @10 :Tty;
    eventfd @11 :EventFd;
    epoll @12 :Epoll;
    timerfd @13 :TimerFd;
    signalfd @14 :SignalFd;
    inotify @15 :Inotify;
    memfd @16 :MemFd;
    charDevice @17 :CharDevice;
    other @18 :Text;             # an object this version cannot restore (for inspection)
    # Since 1.2:
    pidfd @20 :Pidfd;
    fanotify @21 :Fanotify;
    opath @22 :OPath;            # an O_PATH descriptor (on any kind of file, symlinks included)
    nsfs @23 :NsFile;            # a namespace file (/proc/PID/ns/*)
    netlinkSocket @24 :NetlinkSocket;
    packetSocket @25 :PacketSocket;
    bpfMap @26 :BpfMap;          # since 1.2, later: a BPF map (bpf(BPF_MAP_CREATE))
  }
  owner @19 :FileOwner;          # F_GETOWN_EX / F_GETSIG
}

# A BPF map: its definition as BPF_OBJ_GET_INFO_BY_FD gives it, and its
# entries. Hash, array and LRU hash maps without BTF and not offloaded to a
# device; the restore makes a new map (with a new map id) and fills it.
struct BpfMap {
  mapType @0 :UInt32;            # BPF_MAP_TYPE_*: 1 hash, 2 array, 9 LRU hash
  keySize @1 :UInt32;
  valueSize @2 :UInt32;
  maxEntries @3 :UInt32;
  mapFlags @4 :UInt32;           # BPF_F_* as created (BPF_F_NUMA_NODE: made on node 0, the kernel does not tell which)
  name @5 :Data;                 # up to 15 bytes
  frozen @6 :Bool;               # BPF_MAP_FREEZE was applied (fdinfo "frozen")
  mapExtra @7 :UInt64;
  keys @8 :Data;                 # the keys, keySize bytes each, in iteration order
  values @9 :Data;               # their values, valueSize bytes each, in the same order
}

struct Pidfd {
  pid @0 :Int32;                 # the process it refers to
  dead @1 :Bool;                 # that process had exited and was reaped
  thread @2 :Bool;               # PIDFD_THREAD
  inode @3 :UInt64;              # pidfs inode (0: unknown); pidfds with one inode refer to one process
}

struct Fanotify {
  initFlags @0 :UInt32;          # fanotify_init flags
  eventFlags @1 :UInt32;         # fanotify_init event_f_flags
  marks @2 :List(FanotifyMark);
}

struct FanotifyMark {
  type @0 :UInt32;               # FAN_MARK_INODE=0, FAN_MARK_MOUNT=0x10, FAN_MARK_FILESYSTEM=0x100
  mask @1 :UInt64;
  ignoredMask @2 :UInt64;
  flags @3 :UInt32;              # FAN_MARK_* flags as fdinfo shows them
  path @4 :Data;                 # the marked object
  dev @5 :UInt64;
  inode @6 :UInt64;
}

struct OPath {
  file @0 :FileIdentity;
  symlink @1 :Bool;              # opened with O_PATH|O_NOFOLLOW on a symlink
  target @2 :Data;               # a deleted symlink's target (empty otherwise)
}

struct NsFile {
  kind @0 :Text;                 # "net", "mnt", "pid", "uts", "ipc", "user", "cgroup", "time"
  inode @1 :UInt64;
  pid @2 :Int32;                 # a saved process in that namespace; 0 = none
}

struct NetlinkSocket {
  protocol @0 :UInt32;           # NETLINK_ROUTE=0, ...
  type @1 :UInt32;               # SOCK_RAW=3, SOCK_DGRAM=2
  portId @2 :UInt32;             # bound port id (nl_pid), 0 = unbound
  groups @3 :List(UInt32);       # multicast groups joined, by number
  dstPortId @4 :UInt32;          # connected destination
  dstGroup @5 :UInt32;
  options @6 :List(SockOpt);     # SOL_NETLINK options set (NETLINK_PKTINFO, NETLINK_EXT_ACK, ...)
  droppedQueue @7 :UInt32;       # bytes of messages queued for reading at the dump, not saved
}

struct PacketSocket {
  type @0 :UInt32;               # SOCK_RAW=3, SOCK_DGRAM=2
  protocol @1 :UInt16;           # ethertype, network order
  ifindex @2 :Int32;             # bound interface, 0 = all
  version @3 :UInt32;            # PACKET_VERSION
  fanout @4 :UInt32;             # PACKET_FANOUT (id | type << 16), 0 = none
  memberships @5 :List(PacketMembership);
  options @6 :List(SockOpt);     # SOL_PACKET and socket options set
  droppedQueue @7 :UInt32;       # bytes of packets queued for reading at the dump, not saved
  # Added after the first 1.2 images (absent: no ring):
  rxRing @8 :PacketRing;         # PACKET_RX_RING as set (blockNr 0: none)
  txRing @9 :PacketRing;         # PACKET_TX_RING as set
}

# A packet socket's ring as sock_diag shows it (struct packet_diag_ring);
# set again with PACKET_RX_RING/PACKET_TX_RING (tpacket_req3 for
# TPACKET_V3, tpacket_req otherwise). Its frames are not saved; a mapping
# of the rings is a Vma with VmaBacking.packetRing.
struct PacketRing {
  blockSize @0 :UInt32;
  blockNr @1 :UInt32;
  frameSize @2 :UInt32;
  frameNr @3 :UInt32;
  retireTmo @4 :UInt32;          # TPACKET_V3: tp_retire_blk_tov
  sizeofPriv @5 :UInt32;         # TPACKET_V3: tp_sizeof_priv
  features @6 :UInt32;           # TPACKET_V3: tp_feature_req_word
}

struct PacketMembership {
  ifindex @0 :Int32;
  type @1 :UInt16;               # PACKET_MR_MULTICAST=0, PROMISC=1, ALLMULTI=2, UNICAST=3
  address @2 :Data;
}

# A file lock or lease (since 1.2).
struct FileLock {
  kind @0 :LockKind;
  type @1 :LockType;
  start @2 :UInt64;
  length @3 :UInt64;             # 0 = to the end of the file
  pid @4 :Int32;                 # POSIX: the owning process; others: a saved process holding `file`
  file @5 :UInt32;               # OpenFile.id it was taken through (flock, OFD, lease) or on (POSIX)
  fd @6 :Int32;                  # that fd's number in `pid`
}

enum LockKind {
  flock @0;
  posix @1;
  ofd @2;
  lease @3;
}

enum LockType {
  read @0;
  write @1;
}

# SysV IPC objects (since 1.2).
struct IpcPerm {
  key @0 :Int32;
  id @1 :Int32;
  mode @2 :UInt32;
  uid @3 :UInt32;
  gid @4 :UInt32;
  cuid @5 :UInt32;
  cgid @6 :UInt32;
}

struct SysvShm {
  perm @0 :IpcPerm;
  size @1 :UInt64;
  contents @2 :Blob;
  removed @3 :Bool;              # IPC_RMID done: gone once nothing attaches it
}

struct SysvSem {
  perm @0 :IpcPerm;
  values @1 :List(UInt16);
}

struct SysvMsgQueue {
  perm @0 :IpcPerm;
  qbytes @1 :UInt64;
  messages @2 :List(SysvMsg);
}

struct SysvMsg {
  mtype @0 :Int64;
  data @1 :Data;
}

struct FileOwner {
  pid @0 :Int32;
  kind @1 :Int32;                # F_OWNER_TID=0, PID=1, PGRP=2
  signal @2 :Int32;
}

struct RegularFile {
  file @0 :FileIdentity;
  contents @1 :Blob;             # the whole file when it was deleted (or unreachable)
  hasContents @2 :Bool;
  extents @3 :List(FileExtent);  # since 1.2: when not empty, contents holds only these ranges, in order; the rest are holes
}

struct FileExtent {
  offset @0 :UInt64;
  length @1 :UInt64;
}

struct Pipe {
  id @0 :UInt64;                 # pipe inode; both ends of one pipe share it
  end @1 :PipeEnd;
  data @2 :Data;                 # bytes buffered in the pipe at dump time
  capacity @3 :UInt32;           # F_GETPIPE_SZ
  fifoPath @4 :Data;             # for FIFOs: the path of the node
  fifo @5 :FileIdentity;         # since 1.2: the FIFO node (deleted, mode, owner)
  peerClosed @6 :Bool;           # since 1.2: at the dump no process held the other end
                                 # (no writer of a read end, no reader of a write end)
}

enum PipeEnd {
  read @0;
  write @1;
}

struct UnixSocket {
  inode @0 :UInt64;
  type @1 :UInt32;               # SOCK_STREAM=1, DGRAM=2, SEQPACKET=5
  state @2 :UInt32;
  localPath @3 :Data;            # bound name ("\0abstract" for abstract)
  peerPath @4 :Data;
  peerInode @5 :UInt64;
  listening @6 :Bool;
  backlog @7 :UInt32;
  queued @8 :Data;               # bytes queued for reading
  shutdown @9 :UInt32;
  # Since 1.2:
  messages @10 :List(UnixMessage);  # what is queued for reading, in order, with its fds and credentials (supersedes `queued` when not empty)
  fileMode @11 :UInt32;          # the socket file of a path name: st_mode (type and permission bits); 0 = not known
  fileUid @12 :UInt32;           # its owner
  fileGid @13 :UInt32;
  deleted @14 :Bool;             # the socket file of the path name was removed (or is another file now)
  pending @15 :List(UInt64);     # listening: inodes of the clients whose connections wait in the accept queue, in order
  external @16 :UnixExternal;    # the peer is outside the image: what a restore makes of the socket
  options @17 :List(SockOpt);    # options that differ from a new socket's (SO_PASSCRED, SO_RCVBUF, ...)
}

# One message (datagram, seqpacket record, or for a stream socket a run of
# bytes from one writer) queued for reading on a unix socket (since 1.2).
struct UnixMessage {
  data @0 :Data;
  files @1 :List(UInt32);        # OpenFile.id of each fd passed with it (SCM_RIGHTS), in order
  hasCreds @2 :Bool;             # the sender's credentials are known (SCM_CREDENTIALS)
  pid @3 :Int32;
  uid @4 :UInt32;
  gid @5 :UInt32;
  sender @6 :Data;               # datagram: the sender's bound name; empty = unnamed
}

# What a restore makes of a unix socket connected to one outside the image (since 1.2).
enum UnixExternal {
  none @0;                       # the peer is in the image (or there is none)
  reconnect @1;                  # connect again to the peer's name (`peerPath`)
  close @2;                      # a socket whose peer has gone: queued data, then end of file
}

struct InetSocket {
  family @0 :UInt32;             # AF_INET=2, AF_INET6=10
  type @1 :UInt32;
  protocol @2 :UInt32;
  state @3 :UInt32;              # TCP state numbers as in /proc/net/tcp
  localAddr @4 :Data;            # 4 or 16 bytes
  localPort @5 :UInt16;
  remoteAddr @6 :Data;
  remotePort @7 :UInt16;
  backlog @8 :UInt32;
  options @9 :List(SockOpt);
  # Since 1.2:
  shutdown @10 :UInt32;          # sk_shutdown: 1 = no more receiving, 2 = no more sending
  tcp @11 :TcpConnection;        # hasTcp: a TCP connection saved with TCP_REPAIR; with state
                                 # close and `closed` (added later in 1.2): only recvQueue, the
                                 # bytes a reset connection had not given the process yet
  hasTcp @12 :Bool;
  pending @13 :List(InetSocket); # listening TCP: connections that waited in the accept queue, in order
  datagrams @14 :List(Datagram); # UDP / UDP-Lite: queued datagrams, in order
  lockTag @15 :Text;             # the netfilter lock (nft table inet ckpt_lock_<tag>) holding this connection
  closed @16 :Bool;              # a live connection saved without its state (--tcp-close), or (state close) one closed before the dump: restored closed
  droppedQueue @17 :UInt32;      # bytes queued for reading that were not saved (raw and ping sockets)
}

# A TCP connection as TCP_REPAIR reads it (since 1.2). Sequence numbers
# leave out the SYN and FINs; the state (InetSocket.state) says which FINs.
struct TcpConnection {
  sendSeq @0 :UInt32;            # one past the last byte the process wrote
  recvSeq @1 :UInt32;            # one past the last byte received
  sendQueue @2 :Blob;            # written but not acknowledged: the sent part, then `unsent` bytes never sent
  unsent @3 :UInt32;
  recvQueue @4 :Blob;            # received but not read
  mssClamp @5 :UInt32;
  sndWscale @6 :UInt8;
  rcvWscale @7 :UInt8;
  wscale @8 :Bool;               # window scaling was negotiated
  sack @9 :Bool;
  timestamps @10 :Bool;
  tsClock @11 :UInt32;           # the connection's TCP timestamp clock at the dump
  hasWindow @12 :Bool;           # the window fields below were read (TCP_REPAIR_WINDOW)
  sndWl1 @13 :UInt32;
  sndWnd @14 :UInt32;
  maxWindow @15 :UInt32;
  rcvWnd @16 :UInt32;
  rcvWup @17 :UInt32;
}

# A datagram queued on a UDP socket (since 1.2).
struct Datagram {
  srcAddr @0 :Data;              # 4 or 16 bytes
  srcPort @1 :UInt16;
  dstAddr @2 :Data;              # the address it was sent to (a socket bound to a wildcard); empty: the socket's own
  data @3 :Data;
}

struct SockOpt {
  level @0 :Int32;
  name @1 :Int32;
  value @2 :Data;
}

struct Tty {
  index @0 :Int32;               # pts number, -1 when not a pty
  isController @1 :Bool;         # the controlling terminal of the session
  termios @2 :Data;              # struct termios2, raw
  winRows @3 :UInt16;
  winCols @4 :UInt16;
  foregroundPgrp @5 :Int32;
  rdev @6 :UInt64;
  # Since 1.2:
  role @7 :TtyRole;              # which kind of terminal (unknown: older images, tell by rdev)
  realRdev @8 :UInt64;           # TIOCGDEV: the terminal behind /dev/tty, /dev/console, /dev/tty0 (a pty end: its slave)
  pair @9 :UInt32;               # PtyPair.id when the pty's master is in the image; 0 = a terminal from outside
  devpts @10 :UInt64;            # st_dev of the devpts instance of a pty end; 0 = not known
  winXpixel @11 :UInt16;
  winYpixel @12 :UInt16;
  sid @13 :Int32;                # the session whose controlling terminal it is; 0 = none or not known
  hungUp @14 :Bool;              # hung up (its pty master closed, vhangup): every call on it but close fails; no settings saved
}

enum TtyRole {
  unknown @0;
  slave @1;                      # /dev/pts/N
  master @2;                     # /dev/ptmx (one end of a pair, see PtyPair)
  devTty @3;                     # /dev/tty: the opener's controlling terminal
  console @4;                    # /dev/console
  vt @5;                         # /dev/ttyN (N < 64), /dev/tty0 the current one
  serial @6;                     # serial lines (/dev/ttyS*, ttyUSB*, ...)
}

# A pty pair whose master is held by a saved process (a tmux server,
# script, an expect-like parent): everything the kernel keeps for the pair
# (since 1.2). Its slave, if open, is held by saved processes only.
struct PtyPair {
  id @0 :UInt32;                 # > 0, named by Tty.pair
  index @1 :UInt32;              # /dev/pts/N (TIOCGPTN)
  devpts @2 :UInt64;             # st_dev of its devpts instance; 0 = not known
  termios @3 :Data;              # struct termios2 of the slave, raw (44 bytes on x86_64)
  winRows @4 :UInt16;
  winCols @5 :UInt16;
  winXpixel @6 :UInt16;
  winYpixel @7 :UInt16;
  packet @8 :Bool;               # TIOCPKT on the master
  locked @9 :Bool;               # TIOCSPTLCK: the slave cannot be opened
  slaveExclusive @10 :Bool;      # TIOCEXCL on the slave
  peerClosed @11 :Bool;          # the slave was opened and every slave description is closed (the master reads EIO)
  sid @12 :Int32;                # the session whose controlling terminal the slave is; 0 = none
  foregroundPgrp @13 :Int32;     # its foreground process group; 0 = none
  inputLines @14 :List(Data);    # input not yet read on the slave side: complete lines (canonical mode), one read() each
  inputPending @15 :Data;        # ... then the unfinished line (canonical mode), or all of it (other modes)
  output @16 :Data;              # output not yet read by the master (after output processing)
  packetStatus @17 :UInt8;       # packet-mode status bits pending at the dump (not restored)
  slaveMode @18 :UInt32;         # since 1.2: st_mode of /dev/pts/N (0 = not known)
  slaveUid @19 :UInt32;          # ... and its owner
  slaveGid @20 :UInt32;
}

struct EventFd {
  count @0 :UInt64;
  semaphore @1 :Bool;
}

struct Epoll {
  targets @0 :List(EpollTarget);
}

struct EpollTarget {
  fd @0 :Int32;                  # fd number in the owning process at dump time
  file @1 :UInt32;               # OpenFile.id of the watched file
  events @2 :UInt32;
  data @3 :UInt64;
}

struct TimerFd {
  clock @0 :Int32;
  intervalNs @1 :UInt64;
  valueNs @2 :UInt64;            # time to next expiry; 0 = disarmed
  ticks @3 :UInt64;              # expirations not yet read
  settimeFlags @4 :UInt32;       # TFD_TIMER_ABSTIME, ...
  expiryNs @5 :Int64;            # since 1.2: the next expiry as an absolute time of `clock`; 0 = disarmed
}

struct SignalFd {
  mask @0 :UInt64;
}

struct Inotify {
  watches @0 :List(InotifyWatch);
}

struct InotifyWatch {
  wd @0 :Int32;
  mask @1 :UInt32;
  path @2 :Data;
  inode @3 :UInt64;
  dev @4 :UInt64;
}

struct MemFd {
  name @0 :Data;                 # without the "memfd:" prefix
  id @1 :UInt64;                 # inode, matches SharedMemory.id of its mappings
  size @2 :UInt64;
  seals @3 :UInt32;
  contents @4 :Blob;             # file contents
  mode @5 :UInt32;
  # Since 1.2:
  hugePageSize @6 :UInt64;       # made with MFD_HUGETLB: its page size; 0 = an ordinary memfd
}

struct CharDevice {
  rdev @0 :UInt64;               # st_rdev
  path @1 :Data;
  file @2 :FileIdentity;         # since 1.2: mode, owner, times; deleted = the node was unlinked (made again with mknod)
}
