//! The in-memory model of a saved process tree.
//!
//! These types mirror `schema/ckpt.capnp` one to one (same names in
//! snake_case); `crate::codec` converts between them and the Cap'n Proto
//! message. Capture fills them, restore and ckptfs read them. Page contents
//! are not held here: [`MemoryRun`]s point into the container's frames, read
//! through [`crate::ImageReader`].

/// Root of the metadata: one dump.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Image {
    pub format_major: u16,
    pub format_minor: u16,
    pub tool_version: String,
    pub created_ns: i64,
    pub host: HostInfo,
    pub processes: Vec<Process>,
    pub files: Vec<OpenFile>,
    pub frames: Vec<Frame>,
    pub root_pid: i32,
    pub freeze_ns: u64,
    pub generation: u32,
    pub notes: Vec<Note>,
    /// File locks and leases (since 1.2).
    pub locks: Vec<FileLock>,
    /// Every seccomp filter of the tree, once (since 1.2).
    pub seccomp_filters: Vec<SeccompFilter>,
    pub sysv_shm: Vec<SysvShm>,
    pub sysv_sem: Vec<SysvSem>,
    pub sysv_msg: Vec<SysvMsgQueue>,
    /// 16 random bytes naming this dump; empty before 1.2.
    pub image_id: Vec<u8>,
    /// Incremental dump: the image that holds the pages of `RunKind::Parent` runs.
    pub parent: ParentRef,
    /// Pty pairs whose master is in the image (since 1.2).
    pub ptys: Vec<PtyPair>,
}

/// The image an incremental dump was taken against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParentRef {
    /// The parent's `Image::image_id`; empty = no parent.
    pub image_id: Vec<u8>,
    pub path: Vec<u8>,
    pub created_ns: i64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Note {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostInfo {
    pub hostname: String,
    pub kernel_release: String,
    pub arch: Arch,
    pub page_size: u32,
    pub cpu: CpuInfo,
    pub boot_id: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Arch {
    #[default]
    Unknown,
    X8664,
    Aarch64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuInfo {
    pub vendor: String,
    pub model_name: String,
    pub family: u32,
    pub model: u32,
    pub stepping: u32,
    pub flags: Vec<String>,
    pub xcr0: u64,
    pub xsave_size: u32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Process {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub state: String,
    pub comm: Vec<u8>,
    pub exe: FileIdentity,
    pub cmdline: Vec<Vec<u8>>,
    pub environ: Vec<Vec<u8>>,
    pub cwd: Vec<u8>,
    pub root: Vec<u8>,
    pub umask: u32,
    pub rlimits: Vec<Rlimit>,
    pub creds: Credentials,
    pub personality: u32,
    pub mm: MmLayout,
    pub vmas: Vec<Vma>,
    pub memory: Vec<MemoryRun>,
    /// One per signal 1..=64, index = signo - 1.
    pub sigactions: Vec<SigAction>,
    pub shared_pending: Vec<SigInfo>,
    pub itimers: Vec<ITimer>,
    pub posix_timers: Vec<PosixTimer>,
    pub fds: Vec<Fd>,
    pub threads: Vec<Thread>,
    pub children: Vec<i32>,
    pub oom_score_adj: i32,
    pub dumpable: bool,
    pub child_subreaper: bool,
    pub parent_death_signal: i32,
    pub exit_signal: i32,
    pub login_uid: u32,
    pub timer_slack_ns: u64,
    pub thp_disabled: bool,
    /// A zombie's wait status (since 1.2).
    pub exit_status: i32,
    pub shares: SharedTables,
    /// cgroup v2 path; empty = unknown.
    pub cgroup: Vec<u8>,
    pub membarrier: u32,
    /// prctl(PR_GET_MDWE) flags; 0 = none (since 1.2).
    pub mdwe: u32,
    /// /proc/PID/coredump_filter; 0 = not saved (since 1.2).
    pub coredump_filter: u32,
    /// The current directory (path = `cwd`); deleted ones are recreated.
    pub cwd_identity: FileIdentity,
    /// st_rdev of the controlling terminal; 0 = none.
    pub controlling_tty: u64,
    /// The fd ckpt left in the process for dirty-page tracking (not restored).
    pub ckpt_uffd_fd: Option<i32>,
    /// A stopped process: the signal that stopped it (0: not known, SIGSTOP).
    pub stop_signal: i32,
    /// cgroup v1 membership, one per v1 hierarchy.
    pub cgroups_v1: Vec<CgroupPath>,
    /// cgroup directories to make again where missing (parents first).
    pub cgroup_dirs: Vec<CgroupDir>,
    /// In its own cgroup namespace: the namespace's root per hierarchy
    /// ("" = v2); empty = the dumper's namespace.
    pub cgroup_ns_roots: Vec<CgroupPath>,
}

/// A cgroup of one hierarchy, as the dumper's cgroup namespace sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct CgroupPath {
    /// The controllers field of /proc/PID/cgroup ("cpu,cpuacct",
    /// "name=zdtmtst"); "" = cgroup v2.
    pub hierarchy: String,
    /// Absolute path in the hierarchy.
    pub path: Vec<u8>,
}

/// A cgroup directory to make again where missing, with its owner, mode
/// and the control files saved with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupDir {
    pub dir: CgroupPath,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub files: Vec<CgroupFile>,
}

/// A control file of a cgroup directory: its value (when saved), owner and mode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupFile {
    pub name: String,
    pub value: Option<Vec<u8>>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Which saved process's kernel table a process shares; 0 = its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharedTables {
    pub files: i32,
    pub fs: i32,
    pub sighand: i32,
    pub vm: i32,
    pub sysvsem: i32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileIdentity {
    pub path: Vec<u8>,
    pub dev: u64,
    pub inode: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
    pub deleted: bool,
    pub uid: u32,
    pub gid: u32,
    /// Since 1.2.
    pub ctime_ns: i64,
    /// Inode generation (FS_IOC_GETVERSION), when the filesystem has one.
    pub generation: Option<u64>,
    pub atime_ns: i64,
    /// SHA-256 of the contents when computed; empty otherwise.
    pub content_hash: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rlimit {
    pub resource: u32,
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Credentials {
    pub ruid: u32,
    pub euid: u32,
    pub suid: u32,
    pub fsuid: u32,
    pub rgid: u32,
    pub egid: u32,
    pub sgid: u32,
    pub fsgid: u32,
    pub groups: Vec<u32>,
    pub cap_inheritable: u64,
    pub cap_permitted: u64,
    pub cap_effective: u64,
    pub cap_bounding: u64,
    pub cap_ambient: u64,
    pub securebits: u32,
    pub no_new_privs: bool,
    pub seccomp_mode: u32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MmLayout {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    /// (key, value) pairs, up to and including AT_NULL.
    pub auxv: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Thread {
    pub tid: i32,
    pub comm: Vec<u8>,
    pub state: String,
    pub regs: Registers,
    pub blocked: u64,
    pub pending: Vec<SigInfo>,
    pub altstack: SigAltStack,
    pub clear_child_tid: u64,
    pub robust_list: RobustList,
    pub rseq: Rseq,
    pub sched: Sched,
    pub cpu_affinity: Vec<u64>,
    /// The thread's own credentials, when they differ from its process's (since 1.2).
    pub creds: Option<Credentials>,
    /// 1 + index into `Image::seccomp_filters` of the newest filter; 0 = none.
    pub seccomp_filter: u32,
    /// The thread's cgroup v1 membership where it differs from its
    /// process's; empty = the process's.
    pub cgroups_v1: Vec<CgroupPath>,
}

/// One seccomp filter; `parent` is 1 + the index of the filter below it (0 = none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeccompFilter {
    pub parent: u32,
    /// struct sock_filter[] as PTRACE_SECCOMP_GET_FILTER gives it.
    pub program: Vec<u8>,
    pub flags: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SigAltStack {
    pub sp: u64,
    pub size: u64,
    pub flags: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RobustList {
    pub head: u64,
    pub len: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rseq {
    pub address: u64,
    pub length: u32,
    pub signature: u32,
    pub flags: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sched {
    pub policy: u32,
    pub priority: u32,
    pub nice: i32,
    /// I/O priority: class << 13 | level; 0 = none, from nice (since 1.2).
    pub ioprio: u32,
}

#[derive(Debug, Clone, Default, PartialEq)]
#[allow(clippy::large_enum_variant)]
#[non_exhaustive]
pub enum Registers {
    #[default]
    None,
    X8664(X8664Regs),
}

impl Registers {
    /// The name of the register set ("none", "x86_64"), for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Registers::None => "none",
            Registers::X8664(_) => "x86_64",
        }
    }
}

/// x86_64 general registers in `struct user_regs_struct` order, plus XSAVE.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct X8664Regs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub orig_rax: u64,
    pub rip: u64,
    pub cs: u64,
    pub eflags: u64,
    pub rsp: u64,
    pub ss: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
    pub xsave: Vec<u8>,
    pub xfeatures: u64,
}

/// Names of the general registers, in `user_regs_struct` order.
pub const X8664_GPR_NAMES: [&str; 27] = [
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi",
    "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs",
    "gs",
];

impl X8664Regs {
    /// The 27 general registers in `user_regs_struct` order.
    pub fn gprs(&self) -> [u64; 27] {
        [
            self.r15,
            self.r14,
            self.r13,
            self.r12,
            self.rbp,
            self.rbx,
            self.r11,
            self.r10,
            self.r9,
            self.r8,
            self.rax,
            self.rcx,
            self.rdx,
            self.rsi,
            self.rdi,
            self.orig_rax,
            self.rip,
            self.cs,
            self.eflags,
            self.rsp,
            self.ss,
            self.fs_base,
            self.gs_base,
            self.ds,
            self.es,
            self.fs,
            self.gs,
        ]
    }

    /// Set the general registers from `user_regs_struct` order.
    pub fn set_gprs(&mut self, v: &[u64; 27]) {
        [
            self.r15,
            self.r14,
            self.r13,
            self.r12,
            self.rbp,
            self.rbx,
            self.r11,
            self.r10,
            self.r9,
            self.r8,
            self.rax,
            self.rcx,
            self.rdx,
            self.rsi,
            self.rdi,
            self.orig_rax,
            self.rip,
            self.cs,
            self.eflags,
            self.rsp,
            self.ss,
            self.fs_base,
            self.gs_base,
            self.ds,
            self.es,
            self.fs,
            self.gs,
        ] = *v;
    }

    /// A general register by its name (as in [`X8664_GPR_NAMES`]).
    pub fn get(&self, name: &str) -> Option<u64> {
        let i = X8664_GPR_NAMES.iter().position(|n| *n == name)?;
        Some(self.gprs()[i])
    }

    /// Set a general register by name; false if there is no such register.
    pub fn set(&mut self, name: &str, value: u64) -> bool {
        let Some(i) = X8664_GPR_NAMES.iter().position(|n| *n == name) else {
            return false;
        };
        let mut g = self.gprs();
        g[i] = value;
        self.set_gprs(&g);
        true
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub prot: u32,
    pub shared: bool,
    pub grows_down: bool,
    pub backing: VmaBacking,
    pub madvise: u64,
    pub vm_flags: Vec<String>,
    pub name: Vec<u8>,
    /// hugetlb memory: its page size (0: not hugetlb; since 1.2).
    pub huge_page_size: u64,
}

impl Vma {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Why a page of this mapping that no run covers is not in the image
    /// (for [`crate::Error::NotSaved`]); spec/format.md section 6.
    pub fn unsaved_reason(&self) -> String {
        let name = String::from_utf8_lossy(&self.name);
        match &self.backing {
            VmaBacking::Anonymous => "anonymous memory without a run reads as zeros".into(),
            VmaBacking::File(f) => format!(
                "it is a page of {}, left to the file by the dump (not copied)",
                String::from_utf8_lossy(&f.file.path)
            ),
            VmaBacking::SharedMemory(m) => match m.kind {
                ShmKind::Memfd => format!("the page is the memfd {name}'s and was not saved"),
                ShmKind::SysvShm => format!("System V shared memory ({name}) is not saved"),
                ShmKind::PosixShm => {
                    format!("the page is the POSIX shared memory file {name}'s and was not saved")
                }
                ShmKind::AnonymousShared => {
                    "shared anonymous memory without a run reads as zeros".into()
                }
            },
            VmaBacking::Special(SpecialMapping::Heap | SpecialMapping::Stack) => {
                format!("{name} memory without a run reads as zeros")
            }
            VmaBacking::Special(
                SpecialMapping::Vdso
                | SpecialMapping::Vvar
                | SpecialMapping::VvarVclock
                | SpecialMapping::Vsyscall
                | SpecialMapping::Uprobes,
            ) => format!("{name} is provided by the kernel, never saved in an image"),
            VmaBacking::Special(SpecialMapping::Other) => {
                format!("the special mapping {name} is not saved")
            }
            VmaBacking::AioRing(_) => "an AIO ring page without a run reads as zeros".into(),
            VmaBacking::PacketRing => {
                "a packet socket's ring is the socket's memory, never saved in an image".into()
            }
        }
    }
}

pub const PROT_READ: u32 = 1;
pub const PROT_WRITE: u32 = 2;
pub const PROT_EXEC: u32 = 4;

#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub enum VmaBacking {
    #[default]
    Anonymous,
    File(FileMapping),
    SharedMemory(SharedMemory),
    Special(SpecialMapping),
    /// The ring of an AIO context (since 1.2).
    AioRing(AioRing),
    /// The rings of a packet socket, mapped whole from offset 0 (since
    /// 1.2, later): `Vma::name` is the socket's "socket:[INODE]", which
    /// an fd of the same process holds (`OpenFile::path`). Its frames
    /// are not saved.
    PacketRing,
}

/// The header of an AIO context's ring (io_setup): its number of event
/// slots, and where the process and the kernel are in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AioRing {
    pub nr: u32,
    pub head: u32,
    pub tail: u32,
}

impl VmaBacking {
    /// The name of the kind of backing ("anonymous", "file", ...), for messages.
    pub fn name(&self) -> &'static str {
        match self {
            VmaBacking::Anonymous => "anonymous",
            VmaBacking::File(_) => "file",
            VmaBacking::SharedMemory(_) => "shared-memory",
            VmaBacking::Special(_) => "special",
            VmaBacking::AioRing(_) => "aio-ring",
            VmaBacking::PacketRing => "packet-ring",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileMapping {
    pub file: FileIdentity,
    pub offset: u64,
    /// The whole file, when `has_contents` (a deleted file; since 1.2).
    pub contents: Blob,
    pub has_contents: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SharedMemory {
    pub kind: ShmKind,
    pub id: u64,
    pub offset: u64,
    pub size: u64,
    pub name: Vec<u8>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShmKind {
    #[default]
    AnonymousShared,
    Memfd,
    SysvShm,
    PosixShm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpecialMapping {
    Heap,
    Stack,
    Vdso,
    Vvar,
    VvarVclock,
    Vsyscall,
    Uprobes,
    Other,
}

/// Bit numbers of `Vma::madvise` (the schema's `MadviseFlag` ordinals).
pub mod madvise {
    pub const DONT_FORK: u32 = 0;
    pub const DO_NOT_DUMP: u32 = 1;
    pub const WIPE_ON_FORK: u32 = 2;
    pub const HUGE_PAGE: u32 = 3;
    pub const NO_HUGE_PAGE: u32 = 4;
    pub const MERGEABLE: u32 = 5;
    pub const SEQUENTIAL: u32 = 6;
    pub const RANDOM: u32 = 7;
    pub const LOCKED: u32 = 8;
    pub const LOCK_ON_FAULT: u32 = 9;
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryRun {
    pub start: u64,
    pub pages: u32,
    pub kind: RunKind,
    pub frame: u32,
    pub frame_offset: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunKind {
    #[default]
    Data,
    Zero,
    /// Guard pages (MADV_GUARD_INSTALL), since 1.2.
    Guard,
    /// Pages whose contents are in the parent image, since 1.2.
    Parent,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Frame {
    pub offset: u64,
    pub stored_size: u32,
    pub size: u32,
    pub codec: Codec,
    pub crc32: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Codec {
    #[default]
    None,
    Zstd,
    /// One LZ4 block (format 1.1).
    Lz4,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blob {
    pub size: u64,
    pub frames: Vec<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SigAction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SigInfo {
    pub signo: i32,
    pub code: i32,
    /// All 128 bytes of the kernel siginfo.
    pub raw: Vec<u8>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ITimer {
    pub which: u32,
    pub interval_ns: u64,
    pub value_ns: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PosixTimer {
    pub id: i32,
    pub clock: i32,
    pub notify: i32,
    pub signo: i32,
    pub value: u64,
    pub notify_tid: i32,
    pub interval_ns: u64,
    pub value_ns: u64,
    pub overrun: i32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fd {
    pub fd: i32,
    pub cloexec: bool,
    /// `OpenFile::id`.
    pub file: u32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpenFile {
    pub id: u32,
    pub flags: u32,
    pub position: u64,
    pub path: Vec<u8>,
    pub kind: FileKind,
    pub owner: FileOwner,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileOwner {
    pub pid: i32,
    pub kind: i32,
    pub signal: i32,
}

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum FileKind {
    Regular(RegularFile),
    Directory(FileIdentity),
    Pipe(Pipe),
    Fifo(Pipe),
    UnixSocket(UnixSocket),
    InetSocket(InetSocket),
    Tty(Tty),
    EventFd(EventFd),
    Epoll(Epoll),
    TimerFd(TimerFd),
    SignalFd(SignalFd),
    Inotify(Inotify),
    MemFd(MemFd),
    CharDevice(CharDevice),
    Other(String),
    Pidfd(Pidfd),
    Fanotify(Fanotify),
    OPath(OPath),
    Nsfs(NsFile),
    NetlinkSocket(NetlinkSocket),
    PacketSocket(PacketSocket),
    BpfMap(BpfMap),
}

impl Default for FileKind {
    fn default() -> Self {
        FileKind::Other(String::new())
    }
}

impl FileKind {
    /// Short lower-case name of the kind, as used by `ckpt show` and ckptfs.
    pub fn name(&self) -> &'static str {
        match self {
            FileKind::Regular(_) => "regular",
            FileKind::Directory(_) => "directory",
            FileKind::Pipe(_) => "pipe",
            FileKind::Fifo(_) => "fifo",
            FileKind::UnixSocket(_) => "unix-socket",
            FileKind::InetSocket(_) => "inet-socket",
            FileKind::Tty(_) => "tty",
            FileKind::EventFd(_) => "eventfd",
            FileKind::Epoll(_) => "epoll",
            FileKind::TimerFd(_) => "timerfd",
            FileKind::SignalFd(_) => "signalfd",
            FileKind::Inotify(_) => "inotify",
            FileKind::MemFd(_) => "memfd",
            FileKind::CharDevice(_) => "char-device",
            FileKind::Other(_) => "other",
            FileKind::Pidfd(_) => "pidfd",
            FileKind::Fanotify(_) => "fanotify",
            FileKind::OPath(_) => "o-path",
            FileKind::Nsfs(_) => "nsfs",
            FileKind::NetlinkSocket(_) => "netlink-socket",
            FileKind::PacketSocket(_) => "packet-socket",
            FileKind::BpfMap(_) => "bpf-map",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegularFile {
    pub file: FileIdentity,
    pub contents: Blob,
    pub has_contents: bool,
    /// When not empty, `contents` holds only these ranges, in order; the rest are holes.
    pub extents: Vec<FileExtent>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileExtent {
    pub offset: u64,
    pub length: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pipe {
    pub id: u64,
    pub end: PipeEnd,
    pub data: Vec<u8>,
    pub capacity: u32,
    pub fifo_path: Vec<u8>,
    /// The FIFO node (since 1.2).
    pub fifo: FileIdentity,
    /// At the dump no process held the other end: no writer of a read
    /// end, no reader of a write end (since 1.2).
    pub peer_closed: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PipeEnd {
    #[default]
    Read,
    Write,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnixSocket {
    pub inode: u64,
    pub sock_type: u32,
    pub state: u32,
    pub local_path: Vec<u8>,
    pub peer_path: Vec<u8>,
    pub peer_inode: u64,
    pub listening: bool,
    pub backlog: u32,
    pub queued: Vec<u8>,
    pub shutdown: u32,
    /// What is queued for reading, in order, with fds and credentials
    /// (since 1.2; supersedes `queued` when not empty).
    pub messages: Vec<UnixMessage>,
    /// The socket file of a path name: st_mode, owner (0 mode: not known).
    pub file_mode: u32,
    pub file_uid: u32,
    pub file_gid: u32,
    /// The socket file of the path name was removed (or is another file).
    pub deleted: bool,
    /// Listening: inodes of the clients waiting in the accept queue, in order.
    pub pending: Vec<u64>,
    /// The peer is outside the image: what a restore makes of the socket.
    pub external: UnixExternal,
    pub options: Vec<SockOpt>,
}

/// One message queued on a unix socket (a stream socket's: a run of bytes
/// from one writer, up to an fd-carrying boundary).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnixMessage {
    pub data: Vec<u8>,
    /// `OpenFile::id` of each fd passed with it (SCM_RIGHTS), in order.
    pub files: Vec<u32>,
    pub has_creds: bool,
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
    /// Datagram: the sender's bound name (empty: unnamed).
    pub sender: Vec<u8>,
}

/// What a restore makes of a unix socket whose peer is outside the image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnixExternal {
    /// The peer is in the image, or there is none.
    #[default]
    None,
    /// Connect again to the peer's name.
    Reconnect,
    /// A socket whose peer has gone.
    Close,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct InetSocket {
    pub family: u32,
    pub sock_type: u32,
    pub protocol: u32,
    pub state: u32,
    pub local_addr: Vec<u8>,
    pub local_port: u16,
    pub remote_addr: Vec<u8>,
    pub remote_port: u16,
    pub backlog: u32,
    pub options: Vec<SockOpt>,
    /// sk_shutdown bits (since 1.2): 1 no more receiving, 2 no more sending.
    pub shutdown: u32,
    /// A TCP connection saved with TCP_REPAIR.
    pub tcp: Option<TcpConnection>,
    /// Listening TCP: the connections that waited in the accept queue.
    pub pending: Vec<InetSocket>,
    /// UDP / UDP-Lite: queued datagrams, in order.
    pub datagrams: Vec<Datagram>,
    /// The netfilter lock holding this connection (empty: none).
    pub lock_tag: String,
    /// A live connection saved without its state: restored closed.
    pub closed: bool,
    /// Bytes queued for reading that were not saved.
    pub dropped_queue: u32,
}

/// A TCP connection as TCP_REPAIR reads it (sequence numbers without SYN
/// and FINs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpConnection {
    pub send_seq: u32,
    pub recv_seq: u32,
    /// Written but not acknowledged: the sent part, then `unsent` bytes.
    pub send_queue: Blob,
    pub unsent: u32,
    /// Received but not read.
    pub recv_queue: Blob,
    pub mss_clamp: u32,
    pub snd_wscale: u8,
    pub rcv_wscale: u8,
    pub wscale: bool,
    pub sack: bool,
    pub timestamps: bool,
    pub ts_clock: u32,
    pub window: Option<TcpWindow>,
}

/// TCP_REPAIR_WINDOW values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpWindow {
    pub snd_wl1: u32,
    pub snd_wnd: u32,
    pub max_window: u32,
    pub rcv_wnd: u32,
    pub rcv_wup: u32,
}

/// A datagram queued on a UDP socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Datagram {
    pub src_addr: Vec<u8>,
    pub src_port: u16,
    /// Where it was sent (empty: the socket's own address).
    pub dst_addr: Vec<u8>,
    pub data: Vec<u8>,
}

impl InetSocket {
    /// "127.0.0.1:80 -> 10.0.0.2:5555", "\[::\]:8080".
    pub fn describe(&self) -> String {
        let one = |addr: &[u8], port: u16| match <[u8; 4]>::try_from(addr) {
            Ok(a) => format!("{}:{port}", std::net::Ipv4Addr::from(a)),
            Err(_) => match <[u8; 16]>::try_from(addr) {
                Ok(a) => format!("[{}]:{port}", std::net::Ipv6Addr::from(a)),
                Err(_) => format!("?:{port}"),
            },
        };
        let local = one(&self.local_addr, self.local_port);
        if self.remote_port == 0 {
            local
        } else {
            format!("{local} -> {}", one(&self.remote_addr, self.remote_port))
        }
    }

    /// For `ckpt show`: protocol, addresses and what was saved with it
    /// ("TCP 127.0.0.1:80 -> 10.0.0.2:5555 (established, live)",
    /// "UDP \[::\]:53, 3 datagrams queued", "raw ICMP", ...).
    pub fn summary(&self) -> String {
        const STATES: [&str; 12] = [
            "?",
            "established",
            "SYN sent",
            "SYN received",
            "FIN wait 1",
            "FIN wait 2",
            "TIME wait",
            "closed",
            "close wait",
            "last ACK",
            "listening",
            "closing",
        ];
        let addrs = if self.local_addr.is_empty() && self.remote_port == 0 {
            "unbound".to_string()
        } else {
            self.describe()
        };
        match (self.sock_type as i32, self.protocol as i32) {
            (1, _) => {
                let state = STATES.get(self.state as usize).copied().unwrap_or("?");
                let how = if self.tcp.is_some() {
                    ", live"
                } else if self.closed {
                    ", restored closed"
                } else {
                    ""
                };
                let pending = if self.pending.is_empty() {
                    String::new()
                } else {
                    format!(", {} waiting to be accepted", self.pending.len())
                };
                format!("TCP {addrs} ({state}{how}{pending})")
            }
            (2, 1) | (2, 58) => format!("ping {addrs}"),
            (2, p) => {
                let name = if p == 136 { "UDP-Lite" } else { "UDP" };
                match self.datagrams.len() {
                    0 => format!("{name} {addrs}"),
                    n => format!("{name} {addrs}, {n} datagram(s) queued"),
                }
            }
            (3, p) => format!("raw protocol {p}"),
            (t, p) => format!("type {t} protocol {p} {addrs}"),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SockOpt {
    pub level: i32,
    pub name: i32,
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tty {
    pub index: i32,
    pub is_controller: bool,
    pub termios: Vec<u8>,
    pub win_rows: u16,
    pub win_cols: u16,
    pub foreground_pgrp: i32,
    pub rdev: u64,
    /// Which kind of terminal (since 1.2; `Unknown` in older images).
    pub role: TtyRole,
    /// TIOCGDEV: the terminal behind /dev/tty, /dev/console, /dev/tty0.
    pub real_rdev: u64,
    /// `PtyPair::id` when the pty's master is in the image; 0 = outside.
    pub pair: u32,
    /// st_dev of the devpts instance of a pty end; 0 = not known.
    pub devpts: u64,
    pub win_xpixel: u16,
    pub win_ypixel: u16,
    /// The session whose controlling terminal it is; 0 = none or not known.
    pub sid: i32,
    /// Hung up (its pty master closed, vhangup): only closing it works
    /// (since 1.2).
    pub hung_up: bool,
}

/// Which kind of terminal a [`Tty`] is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TtyRole {
    /// Older images: tell by `Tty::rdev`.
    #[default]
    Unknown,
    /// A pty slave, /dev/pts/N.
    Slave,
    /// A pty master, /dev/ptmx.
    Master,
    /// /dev/tty, the opener's controlling terminal.
    DevTty,
    /// /dev/console.
    Console,
    /// A virtual console, /dev/ttyN.
    Vt,
    /// A serial line.
    Serial,
}

/// A pty pair whose master is in the image (see the schema).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PtyPair {
    /// > 0, named by `Tty::pair`.
    pub id: u32,
    pub index: u32,
    pub devpts: u64,
    /// struct termios2 of the slave, raw.
    pub termios: Vec<u8>,
    pub win_rows: u16,
    pub win_cols: u16,
    pub win_xpixel: u16,
    pub win_ypixel: u16,
    pub packet: bool,
    pub locked: bool,
    pub slave_exclusive: bool,
    pub peer_closed: bool,
    pub sid: i32,
    pub foreground_pgrp: i32,
    /// Complete input lines (canonical mode), one read() each.
    pub input_lines: Vec<Vec<u8>>,
    /// The unfinished input line, or all the input in other modes.
    pub input_pending: Vec<u8>,
    /// Output the master has not read.
    pub output: Vec<u8>,
    pub packet_status: u8,
    /// st_mode of /dev/pts/N (0: not known), and its owner.
    pub slave_mode: u32,
    pub slave_uid: u32,
    pub slave_gid: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventFd {
    pub count: u64,
    pub semaphore: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Epoll {
    pub targets: Vec<EpollTarget>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EpollTarget {
    pub fd: i32,
    pub file: u32,
    pub events: u32,
    pub data: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerFd {
    pub clock: i32,
    pub interval_ns: u64,
    pub value_ns: u64,
    pub ticks: u64,
    pub settime_flags: u32,
    /// The next expiry, absolute on `clock`; 0 = disarmed (since 1.2).
    pub expiry_ns: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignalFd {
    pub mask: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inotify {
    pub watches: Vec<InotifyWatch>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InotifyWatch {
    pub wd: i32,
    pub mask: u32,
    pub path: Vec<u8>,
    pub inode: u64,
    pub dev: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemFd {
    pub name: Vec<u8>,
    pub id: u64,
    pub size: u64,
    pub seals: u32,
    pub contents: Blob,
    pub mode: u32,
    /// Made with MFD_HUGETLB: its page size (0: an ordinary memfd; since 1.2).
    pub huge_page_size: u64,
}

impl CharDevice {
    /// One of the memory devices every Linux machine has (1:3 null, 1:5
    /// zero, 1:7 full, 1:8 random, 1:9 urandom): the only character
    /// devices a dump saves and a restore may make again. `rdev` in the
    /// kernel's user-space encoding (glibc's major()/minor()).
    pub fn is_memory_device(rdev: u64) -> bool {
        let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
        let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
        major == 1 && matches!(minor, 3 | 5 | 7 | 8 | 9)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CharDevice {
    pub rdev: u64,
    pub path: Vec<u8>,
    /// Mode, owner, times; `deleted`: the device node was unlinked (a
    /// restore makes it again with mknod, then unlinks it). Default in
    /// older images.
    pub file: FileIdentity,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pidfd {
    pub pid: i32,
    pub dead: bool,
    pub thread: bool,
    /// The pidfs inode (0: unknown): pidfds of one process share it.
    pub inode: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fanotify {
    pub init_flags: u32,
    pub event_flags: u32,
    pub marks: Vec<FanotifyMark>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanotifyMark {
    pub mark_type: u32,
    pub mask: u64,
    pub ignored_mask: u64,
    pub flags: u32,
    pub path: Vec<u8>,
    pub dev: u64,
    pub inode: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct OPath {
    pub file: FileIdentity,
    pub symlink: bool,
    /// A deleted symlink's target (empty otherwise).
    pub target: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NsFile {
    pub kind: String,
    pub inode: u64,
    pub pid: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetlinkSocket {
    pub protocol: u32,
    pub sock_type: u32,
    /// Bound port id (0: unbound).
    pub port_id: u32,
    /// Multicast groups joined, by number.
    pub groups: Vec<u32>,
    pub dst_port_id: u32,
    pub dst_group: u32,
    pub options: Vec<SockOpt>,
    pub dropped_queue: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PacketSocket {
    pub sock_type: u32,
    pub protocol: u16,
    pub ifindex: i32,
    pub version: u32,
    pub fanout: u32,
    pub memberships: Vec<PacketMembership>,
    pub options: Vec<SockOpt>,
    pub dropped_queue: u32,
    /// PACKET_RX_RING / PACKET_TX_RING, when set.
    pub rx_ring: Option<PacketRing>,
    pub tx_ring: Option<PacketRing>,
}

/// A packet socket's ring (schema `PacketRing`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketRing {
    pub block_size: u32,
    pub block_nr: u32,
    pub frame_size: u32,
    pub frame_nr: u32,
    pub retire_tmo: u32,
    pub sizeof_priv: u32,
    pub features: u32,
}

/// A BPF map (schema `BpfMap`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BpfMap {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub name: Vec<u8>,
    pub frozen: bool,
    pub map_extra: u64,
    /// The keys, key_size bytes each, in iteration order.
    pub keys: Vec<u8>,
    /// Their values, value_size bytes each.
    pub values: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PacketMembership {
    pub ifindex: i32,
    pub mr_type: u16,
    pub address: Vec<u8>,
}

/// A file lock or lease.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileLock {
    pub kind: LockKind,
    pub lock_type: LockType,
    pub start: u64,
    /// 0 = to the end of the file.
    pub length: u64,
    pub pid: i32,
    /// `OpenFile::id`.
    pub file: u32,
    pub fd: i32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockKind {
    #[default]
    Flock,
    Posix,
    Ofd,
    Lease,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockType {
    #[default]
    Read,
    Write,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IpcPerm {
    pub key: i32,
    pub id: i32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub cuid: u32,
    pub cgid: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SysvShm {
    pub perm: IpcPerm,
    pub size: u64,
    pub contents: Blob,
    pub removed: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SysvSem {
    pub perm: IpcPerm,
    pub values: Vec<u16>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SysvMsgQueue {
    pub perm: IpcPerm,
    pub qbytes: u64,
    pub messages: Vec<SysvMsg>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SysvMsg {
    pub mtype: i64,
    pub data: Vec<u8>,
}

impl Image {
    /// The process with this pid.
    pub fn process(&self, pid: i32) -> Option<&Process> {
        self.processes.iter().find(|p| p.pid == pid)
    }
    pub fn process_mut(&mut self, pid: i32) -> Option<&mut Process> {
        self.processes.iter_mut().find(|p| p.pid == pid)
    }
    /// The open file description with this id.
    pub fn file(&self, id: u32) -> Option<&OpenFile> {
        self.files.iter().find(|f| f.id == id)
    }
}
