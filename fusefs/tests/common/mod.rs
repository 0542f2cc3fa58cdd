//! Helpers of the ckptfs tests: real FUSE mounts (as root), temp stores,
//! synthetic images written with ImageWriter, and a C fixture.
#![allow(dead_code)]

use ckpt_image::*;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Fail loudly (never skip) when the tests cannot run here.
pub fn require_root_and_fuse() {
    let uid = nix::unistd::geteuid().as_raw();
    assert_eq!(
        uid, 0,
        "the ckptfs tests mount real FUSE filesystems and must run as root"
    );
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: the ckptfs tests need FUSE"
    );
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A directory removed (after unmounting anything below it) on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("ckptfs-test-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn join(&self, s: &str) -> PathBuf {
        self.0.join(s)
    }
    pub fn mkdir(&self, s: &str) -> PathBuf {
        let p = self.0.join(s);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if mounted(&self.0.join("mnt")) {
            lazy_umount(&self.0.join("mnt"));
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn ckptfs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ckptfs")
}

/// Whether `mp` is a mount point (listed in /proc/self/mountinfo).
pub fn mounted(mp: &Path) -> bool {
    let Ok(c) = mp.canonicalize() else {
        return false;
    };
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = c.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

pub fn lazy_umount(mp: &Path) {
    let _ = Command::new("umount")
        .arg("-l")
        .arg(mp)
        .stderr(Stdio::null())
        .status();
}

/// A running ckptfs; dropping it unmounts (SIGTERM, then `umount -l`) and
/// reaps it, even when the test failed.
pub struct Mount {
    pub child: Option<Child>,
    pub mnt: PathBuf,
    pub store: PathBuf,
    pub log: PathBuf,
}

impl Mount {
    /// `ckptfs --store STORE MNT [extra...]`, waiting until it is mounted.
    pub fn start(store: &Path, mnt: &Path, extra: &[&str]) -> Mount {
        std::fs::create_dir_all(mnt).unwrap();
        let log = mnt.with_extension("log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(ckptfs_bin())
            .arg("--store")
            .arg(store)
            .arg(mnt)
            .args(extra)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("cannot run ckptfs");
        let mut m = Mount {
            child: Some(child),
            mnt: mnt.to_path_buf(),
            store: store.to_path_buf(),
            log,
        };
        m.wait_mounted();
        m
    }

    fn wait_mounted(&mut self) {
        let t0 = Instant::now();
        while !mounted(&self.mnt) {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("ckptfs exited ({st}) before mounting:\n{}", self.log_text());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "ckptfs did not mount in 20 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// SIGTERM and wait for a clean exit (panics if it is not clean).
    pub fn stop(mut self) {
        let mut c = self.child.take().unwrap();
        signal(c.id() as i32, nix::sys::signal::Signal::SIGTERM);
        let st = wait_timeout(&mut c, Duration::from_secs(20))
            .expect("ckptfs did not exit after SIGTERM");
        assert!(
            st.success(),
            "ckptfs exited with {st} after SIGTERM:\n{}",
            self.log_text()
        );
        assert!(!mounted(&self.mnt), "still mounted after SIGTERM");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id() as i32, nix::sys::signal::Signal::SIGTERM);
            if wait_timeout(&mut c, Duration::from_secs(10)).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if mounted(&self.mnt) {
            lazy_umount(&self.mnt);
        }
    }
}

pub fn wait_timeout(c: &mut Child, t: Duration) -> Option<std::process::ExitStatus> {
    let t0 = Instant::now();
    loop {
        if let Some(s) = c.try_wait().unwrap() {
            return Some(s);
        }
        if t0.elapsed() > t {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// kill(2), ignoring errors (the process may be gone).
pub fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// Wait until `f` holds, up to `t`.
pub fn wait_for(t: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < t {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

// ---------------------------------------------------------------------------
// Synthetic images
// ---------------------------------------------------------------------------

pub const PID: i32 = 4242;
pub const DATA_ADDR: u64 = 0x1000_0000;
pub const DATA_PAGES: usize = 64;
pub const ZERO_ADDR: u64 = 0x2000_0000;
pub const CREATED_NS: i64 = 1_700_000_000_123_456_789;

/// Byte `i` of the saved data mapping.
pub fn data_byte(i: usize) -> u8 {
    ((i * 7 + i / 4096) % 251) as u8
}

pub struct Synth {
    /// Extra small mappings (to test many-mapping listings).
    pub extra_vmas: usize,
    /// Pages of the data mapping.
    pub data_pages: usize,
    pub compression: Compression,
    /// The file the text mapping maps: made (BACKING_LEN bytes of
    /// `backing_byte`) and recorded with its identity; None: a path that
    /// does not exist.
    pub backing: Option<PathBuf>,
    /// Also: a [vvar] and a [vdso] mapping, a memfd mapped shared (pages
    /// from its saved contents), and fds with saved contents: 3 the memfd,
    /// 4 a pipe's read end with bytes in it, 5 a unix socket with bytes
    /// queued, 6 a deleted file.
    pub rich: bool,
    /// Bytes written into the data mapping at MARKER_OFFSET.
    pub marker: Option<&'static [u8]>,
}

impl Default for Synth {
    fn default() -> Self {
        Synth {
            extra_vmas: 0,
            data_pages: DATA_PAGES,
            compression: Compression::Fast,
            backing: None,
            rich: false,
            marker: None,
        }
    }
}

/// Where `Synth::marker` goes in the data mapping.
pub const MARKER_OFFSET: usize = 12345;
/// Length of the file the text mapping maps (two pages and a bit: the
/// mapping's last page reads past its end as zeros).
pub const BACKING_LEN: usize = 4096 + 1000;
pub const VVAR_ADDR: u64 = 0x7ffc_0100_0000;
pub const VDSO_ADDR: u64 = 0x7ffc_0100_4000;
pub const MEMFD_ADDR: u64 = 0x5000_0000;
pub const MEMFD_ID: u64 = 777;
pub const PIPE_DATA: &[u8] = b"bytes queued in the pipe\n";
pub const SOCKET_DATA: &[u8] = b"bytes queued on the socket\n";

/// Byte `i` of the file the text mapping maps.
pub fn backing_byte(i: usize) -> u8 {
    (i % 253) as u8 ^ 0x5a
}

/// The saved contents of the memfd (two pages).
pub fn memfd_byte(i: usize) -> u8 {
    (i / 7 % 256) as u8
}

/// The saved contents of the deleted file.
pub fn deleted_contents() -> Vec<u8> {
    (0..3000u32)
        .map(|i| b"deleted file\n"[i as usize % 13])
        .collect()
}

/// The identity of the file at `p` (for a file mapping of it).
pub fn identity_of(p: &Path) -> FileIdentity {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).unwrap();
    FileIdentity {
        path: p.as_os_str().as_encoded_bytes().to_vec(),
        dev: m.dev(),
        inode: m.ino(),
        size: m.size(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        mode: m.mode(),
        ..Default::default()
    }
}

pub fn regs(rip: u64) -> Registers {
    let mut x = X8664Regs {
        rax: 0x1c,
        rbx: 0xb0b,
        r12: 12,
        rip,
        rsp: 0x7ffc_0000_1000,
        cs: 0x33,
        ss: 0x2b,
        eflags: 0x202,
        orig_rax: u64::MAX,
        ..Default::default()
    };
    x.xsave = (0..576u32).map(|i| i as u8).collect();
    x.xfeatures = 3;
    Registers::X8664(x)
}

/// Write a synthetic image of one process with two threads to `path` (mode 0600).
pub fn write_synthetic(path: &Path, s: &Synth) -> Image {
    let mut w = ImageWriter::new(
        Vec::new(),
        WriteOptions {
            compression: s.compression,
            page_size: 4096,
            frame_size: 1 << 20,
        },
    )
    .unwrap();
    let mut data: Vec<u8> = (0..s.data_pages * 4096).map(data_byte).collect();
    if let Some(m) = s.marker {
        data[MARKER_OFFSET..MARKER_OFFSET + m.len()].copy_from_slice(m);
    }
    w.add_pages(PID, DATA_ADDR, &data).unwrap();
    let text_file = match &s.backing {
        Some(p) => {
            let bytes: Vec<u8> = (0..BACKING_LEN).map(backing_byte).collect();
            std::fs::write(p, bytes).unwrap();
            identity_of(p)
        }
        None => FileIdentity {
            path: b"/nonexistent/synthetic".to_vec(),
            dev: 0x801,
            inode: 99,
            ..Default::default()
        },
    };
    let mut vmas = vec![
        Vma {
            start: 0x40_0000,
            end: 0x40_2000,
            prot: PROT_READ | PROT_EXEC,
            name: text_file.path.clone(),
            backing: VmaBacking::File(FileMapping {
                file: text_file,
                offset: 0,
                ..Default::default()
            }),
            ..Default::default()
        },
        Vma {
            start: DATA_ADDR,
            end: DATA_ADDR + (s.data_pages * 4096) as u64,
            prot: PROT_READ | PROT_WRITE,
            ..Default::default()
        },
        Vma {
            start: ZERO_ADDR,
            end: ZERO_ADDR + 4 * 4096,
            prot: PROT_READ | PROT_WRITE,
            ..Default::default()
        },
    ];
    for i in 0..s.extra_vmas as u64 {
        let start = 0x3000_0000 + i * 0x2000;
        vmas.push(Vma {
            start,
            end: start + 0x1000,
            prot: PROT_READ,
            ..Default::default()
        });
    }
    if s.rich {
        vmas.push(Vma {
            start: MEMFD_ADDR,
            end: MEMFD_ADDR + 2 * 4096,
            prot: PROT_READ | PROT_WRITE,
            shared: true,
            backing: VmaBacking::SharedMemory(SharedMemory {
                kind: ShmKind::Memfd,
                id: MEMFD_ID,
                offset: 0,
                size: 2 * 4096,
                name: b"/memfd:buf (deleted)".to_vec(),
            }),
            name: b"/memfd:buf (deleted)".to_vec(),
            ..Default::default()
        });
        vmas.sort_by_key(|v| v.start);
    }
    vmas.push(Vma {
        start: 0x7ffc_0000_0000,
        end: 0x7ffc_0002_1000,
        prot: PROT_READ | PROT_WRITE,
        grows_down: true,
        backing: VmaBacking::Special(SpecialMapping::Stack),
        name: b"[stack]".to_vec(),
        ..Default::default()
    });
    if s.rich {
        for (start, kind, name) in [
            (VVAR_ADDR, SpecialMapping::Vvar, &b"[vvar]"[..]),
            (VDSO_ADDR, SpecialMapping::Vdso, b"[vdso]"),
        ] {
            vmas.push(Vma {
                start,
                end: start + 2 * 4096,
                prot: PROT_READ,
                backing: VmaBacking::Special(kind),
                name: name.to_vec(),
                ..Default::default()
            });
        }
    }
    let mut sigactions = vec![SigAction::default(); 64];
    sigactions[9] = SigAction {
        handler: 0x40_1000,
        flags: 0x0400_0000,
        restorer: 0x40_1100,
        mask: 1 << 1,
    };
    let out_file = OpenFile {
        id: 2,
        flags: 0o100001,
        position: 5,
        path: b"/tmp/synthetic-out.txt".to_vec(),
        kind: FileKind::Regular(RegularFile {
            file: FileIdentity {
                path: b"/tmp/synthetic-out.txt".to_vec(),
                mode: 0o100644,
                ..Default::default()
            },
            ..Default::default()
        }),
        owner: FileOwner::default(),
    };
    let null = OpenFile {
        id: 1,
        flags: 0o100000,
        position: 0,
        path: b"/dev/null".to_vec(),
        kind: FileKind::CharDevice(CharDevice {
            rdev: 0x103,
            path: b"/dev/null".to_vec(),
            ..Default::default()
        }),
        owner: FileOwner::default(),
    };
    let mut files = vec![null, out_file];
    let mut fds = vec![
        Fd {
            fd: 0,
            cloexec: false,
            file: 1,
        },
        Fd {
            fd: 1,
            cloexec: false,
            file: 2,
        },
    ];
    if s.rich {
        let memfd: Vec<u8> = (0..2 * 4096).map(memfd_byte).collect();
        let memfd_blob = w.add_blob(&memfd).unwrap();
        let deleted_blob = w.add_blob(&deleted_contents()).unwrap();
        let file = |id: u32, path: &[u8], kind: FileKind| OpenFile {
            id,
            flags: 0o2,
            position: 0,
            path: path.to_vec(),
            kind,
            owner: FileOwner::default(),
        };
        files.push(file(
            3,
            b"/memfd:buf (deleted)",
            FileKind::MemFd(MemFd {
                name: b"buf".to_vec(),
                id: MEMFD_ID,
                size: 2 * 4096,
                seals: 0,
                contents: memfd_blob,
                mode: 0o100777,
                huge_page_size: 0,
            }),
        ));
        files.push(file(
            4,
            b"pipe:[5555]",
            FileKind::Pipe(Pipe {
                id: 5555,
                end: PipeEnd::Read,
                data: PIPE_DATA.to_vec(),
                capacity: 65536,
                ..Default::default()
            }),
        ));
        files.push(file(
            5,
            b"socket:[6666]",
            FileKind::UnixSocket(UnixSocket {
                inode: 6666,
                sock_type: 1,
                state: 1,
                queued: SOCKET_DATA.to_vec(),
                ..Default::default()
            }),
        ));
        files.push(file(
            6,
            b"/tmp/gone.txt",
            FileKind::Regular(RegularFile {
                file: FileIdentity {
                    path: b"/tmp/gone.txt".to_vec(),
                    size: deleted_contents().len() as u64,
                    deleted: true,
                    mode: 0o100644,
                    ..Default::default()
                },
                contents: deleted_blob,
                has_contents: true,
                ..Default::default()
            }),
        ));
        for fd in 3..=6 {
            fds.push(Fd {
                fd,
                cloexec: false,
                file: fd as u32,
            });
        }
    }
    let image = Image {
        tool_version: "ckptfs-test".into(),
        created_ns: CREATED_NS,
        host: HostInfo {
            hostname: "test".into(),
            arch: Arch::X8664,
            page_size: 4096,
            ..Default::default()
        },
        root_pid: PID,
        files,
        processes: vec![Process {
            pid: PID,
            ppid: 1,
            pgid: PID,
            sid: PID,
            state: "S".into(),
            comm: b"synthetic".to_vec(),
            exe: match &s.backing {
                Some(p) => identity_of(p),
                None => FileIdentity {
                    path: b"/nonexistent/synthetic".to_vec(),
                    ..Default::default()
                },
            },
            cmdline: vec![b"/nonexistent/synthetic".to_vec(), b"--flag".to_vec()],
            environ: vec![b"HOME=/root".to_vec(), b"LANG=C".to_vec()],
            cwd: b"/tmp".to_vec(),
            root: b"/".to_vec(),
            umask: 0o22,
            rlimits: vec![Rlimit {
                resource: 7,
                name: "NOFILE".into(),
                soft: 1024,
                hard: 4096,
            }],
            vmas,
            sigactions,
            fds,
            threads: vec![
                Thread {
                    tid: PID,
                    comm: b"synthetic".to_vec(),
                    state: "S".into(),
                    regs: regs(0x40_1000),
                    blocked: 1 << 9,
                    ..Default::default()
                },
                Thread {
                    tid: PID + 1,
                    comm: b"worker".to_vec(),
                    state: "S".into(),
                    regs: regs(0x40_1800),
                    ..Default::default()
                },
            ],
            exit_signal: 17,
            ..Default::default()
        }],
        ..Default::default()
    };
    let bytes = w.finish(image).unwrap();
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(&bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    ImageReader::open(path).unwrap().image().clone()
}

// ---------------------------------------------------------------------------
// A real process
// ---------------------------------------------------------------------------

/// A C fixture: prints `READY pid=P addr=A` (A = &value), then every 20 ms
/// `value=V r12=R`; R is kept in r12 across its own nanosleep syscall, so
/// it is the r12 of the saved registers when dumped while sleeping.
pub const FIXTURE_C: &str = r#"
#include <stdio.h>
#include <time.h>
#include <unistd.h>
volatile long value = 1234;
static long sleep_keeping_r12(long v) {
    struct timespec ts = {0, 20000000};
    register long r12 asm("r12") = v;
    long ret;
    asm volatile("syscall" : "=a"(ret), "+r"(r12) : "a"(35L), "D"(&ts), "S"(0L) : "rcx", "r11", "memory");
    (void)ret;
    return r12;
}
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("READY pid=%d addr=%p\n", getpid(), (void *)&value);
    long r = 7;
    for (;;) {
        printf("value=%ld r12=%ld\n", value, r);
        r = sleep_keeping_r12(r);
    }
}
"#;

/// Compile the fixture (once per test binary run) and return its path.
pub fn fixture() -> PathBuf {
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("ckptfs-fixture-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("fixture.c");
        std::fs::write(&src, FIXTURE_C).unwrap();
        let bin = dir.join("ckptfs-fixture");
        let st = Command::new("cc")
            .args(["-O1", "-o"])
            .arg(&bin)
            .arg(&src)
            .status()
            .expect("cc is needed");
        assert!(st.success(), "compiling the fixture failed");
        bin
    })
    .clone()
}

/// A running fixture whose output goes to a file.
pub struct Proc {
    pub child: Child,
    pub pid: i32,
    pub out: PathBuf,
    pub addr: u64,
}

impl Proc {
    pub fn spawn(dir: &Path) -> Proc {
        let out = dir.join("fixture.out");
        let f = std::fs::File::create(&out).unwrap();
        let child = Command::new(fixture())
            .stdout(f)
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let mut p = Proc {
            child,
            pid,
            out,
            addr: 0,
        };
        assert!(
            wait_for(Duration::from_secs(10), || p.output().contains("value=")),
            "fixture did not start"
        );
        let ready = p
            .output()
            .lines()
            .find(|l| l.starts_with("READY"))
            .unwrap()
            .to_string();
        let a = ready.split("addr=0x").nth(1).unwrap();
        p.addr = u64::from_str_radix(a.trim(), 16).unwrap();
        p
    }
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kill a process that is not our child (a restored one) and wait until it is gone.
pub fn kill_pid(pid: i32) {
    signal(pid, nix::sys::signal::Signal::SIGKILL);
    wait_for(Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z ") || s.is_empty())
            .unwrap_or(true)
    });
}
