//! Hostile images at every entry point: `ckpt show`, `ckpt show --json`,
//! `ckpt restore --check`, `ckpt restore`, ckptfs (a store of them, every
//! file read) and examples/python/ckpt_read.py. Truncated, bit-flipped,
//! garbage, wrong-version, oversized-count and self-contradictory images
//! must give a clear error naming the problem (non-zero exit), never a
//! panic, a hang (every command runs under a deadline) or unbounded memory
//! (each command's peak RSS is measured).

use crate::util::*;
use ckpt_image::fuzzing::{sample_image, split_metadata, with_metadata};
use ckpt_image::{Arch, ImageEditor, Registers};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Per command.
const LIMIT: Duration = Duration::from_secs(30);
/// Peak RSS allowed for one command on these (small) images.
const MAX_RSS_KIB: u64 = 512 * 1024;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Class {
    /// Not an image: every reader fails.
    Unreadable,
    /// The metadata reads, page data is damaged: restore fails.
    BadPages,
    /// Decodes and validates but cannot be restored: check and restore fail.
    Refused,
    /// Anything but a crash, hang or blow-up; a restore must fail.
    Any,
}

struct Case {
    name: String,
    bytes: Vec<u8>,
    class: Class,
    /// What the error of check/restore must mention (Refused cases).
    expect: &'static str,
}

struct Measured {
    out: std::process::Output,
    rss_kib: u64,
}

/// Run under a deadline, measuring the peak RSS (wait4).
fn run_measured(cmd: &mut Command) -> Measured {
    let desc = format!("{cmd:?}");
    let piped = spawn_piped(cmd);
    let pid = piped.child.id() as i32;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d2 = done.clone();
    let hung = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h2 = hung.clone();
    let dog = std::thread::spawn(move || {
        let t = Instant::now();
        while !d2.load(std::sync::atomic::Ordering::SeqCst) {
            if t.elapsed() > LIMIT {
                h2.store(true, std::sync::atomic::Ordering::SeqCst);
                let _ = signal(pid, libc::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let (kind, rss_kib) = ckpt_sys::proc::wait::wait_child_rusage(pid).expect("wait4");
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    dog.join().unwrap();
    assert!(
        !hung.load(std::sync::atomic::Ordering::SeqCst),
        "{desc} hung (killed after {LIMIT:?})"
    );
    use std::os::unix::process::ExitStatusExt;
    let status = match kind {
        ckpt_sys::proc::wait::ExitKind::Exited(c) => std::process::ExitStatus::from_raw(c << 8),
        ckpt_sys::proc::wait::ExitKind::Signaled(s) => std::process::ExitStatus::from_raw(s),
    };
    // Reaped above: the Child handle is only dropped.
    let m = Measured {
        out: piped.output(status),
        rss_kib,
    };
    assert!(
        m.rss_kib < MAX_RSS_KIB,
        "{desc}: peak RSS {} KiB",
        m.rss_kib
    );
    m
}

fn flip(b: &[u8], i: usize, mask: u8) -> Vec<u8> {
    let mut v = b.to_vec();
    if !v.is_empty() {
        let i = i.min(v.len() - 1);
        v[i] ^= mask;
    }
    v
}

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Copy `good` to a temp file, edit its model, commit; the bytes.
fn edited(
    dir: &TempDir,
    good: &[u8],
    name: &str,
    f: impl FnOnce(&mut ckpt_image::Image),
) -> Vec<u8> {
    let p = dir.join(format!("edit-{name}.ckpt"));
    std::fs::write(&p, good).unwrap();
    let mut ed = ImageEditor::open(&p).unwrap();
    f(ed.image_mut());
    ed.commit()
        .unwrap_or_else(|e| panic!("{name}: editing: {e}"));
    drop(ed);
    std::fs::read(&p).unwrap()
}

/// The hostile corpus, from a real image of a dumped (and killed) process.
fn corpus(dir: &TempDir, good: &[u8]) -> Vec<Case> {
    let mut v = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>, class: Class, expect: &'static str| {
        v.push(Case {
            name: name.to_string(),
            bytes,
            class,
            expect,
        })
    };
    let len = good.len();
    let (prefix, meta) = split_metadata(good).expect("split the real image");
    let meta_off = prefix.len();
    use Class::*;

    // Truncated.
    for (name, n) in [
        ("trunc-empty", 0),
        ("trunc-1", 1),
        ("trunc-31", 31),
        ("trunc-header", 32),
        ("trunc-in-frames", meta_off / 2),
        ("trunc-meta-header", meta_off + 10),
        ("trunc-meta", meta_off + 24 + meta.len() / 2),
        ("trunc-commit", len - 30),
        ("trunc-last-byte", len - 1),
    ] {
        add(name, good[..n].to_vec(), Unreadable, "");
    }
    // Bit flips in the header, the metadata record and the commit.
    for (name, i) in [
        ("flip-magic", 3),
        ("flip-version", 9),
        ("flip-header-crc", 29),
        ("flip-meta-record", meta_off + 5),
        ("flip-meta-start", meta_off + 24 + 3),
        ("flip-meta-mid", meta_off + 24 + meta.len() / 2),
        ("flip-meta-end", meta_off + 24 + meta.len() - 2),
        ("flip-commit", len - 30),
        ("flip-commit-magic", len - 3),
    ] {
        add(name, flip(good, i, 0x10), Unreadable, "");
    }
    // Bit flips in page frames: the metadata is fine, the pages are not.
    for (name, i) in [
        ("flip-frame-header", 32 + 9),
        ("flip-frame-early", 32 + 24 + 200),
        ("flip-frame-mid", meta_off / 2 + 1),
        ("flip-frame-late", meta_off - 100),
    ] {
        add(name, flip(good, i, 0x40), BadPages, "");
    }
    // Garbage.
    add("garbage", noise(8192, 7), Unreadable, "");
    let mut g = ckpt_image::fuzzing::container::encode_header(1, 0).to_vec();
    g.extend(noise(8192, 11));
    add("garbage-after-header", g, Unreadable, "");
    let mut g = good[..meta_off].to_vec();
    g.extend(noise(4096, 13));
    add("garbage-for-metadata-record", g, Unreadable, "");
    add(
        "garbage-metadata",
        with_metadata(&prefix, &noise(4096, 17)),
        Unreadable,
        "",
    );
    add(
        "empty-metadata",
        with_metadata(&prefix, &[]),
        Unreadable,
        "",
    );
    // Wrong versions (with a correct header CRC).
    for (name, major, minor) in [
        ("version-2.0", 2, 0),
        ("version-0.1", 0, 1),
        ("version-65535", 65535, 0),
    ] {
        let mut b = good.to_vec();
        b[..32].copy_from_slice(&ckpt_image::fuzzing::container::encode_header(major, minor));
        add(name, b, Unreadable, "");
    }
    // Oversized counts: every list pointer of the metadata message in
    // turn claims 2^29 - 1 elements (a word ending in binary 01 may be
    // data rather than a pointer, hence class Any).
    let seg_words = 8; // segment table of a one-segment message
    let mut n = 0;
    for w in (seg_words..meta.len().saturating_sub(8)).step_by(8) {
        let word = u64::from_le_bytes(meta[w..w + 8].try_into().unwrap());
        if word & 3 == 1 && word >> 32 != 0 {
            let mut m = meta.clone();
            let huge = (word & 0xffff_ffff) | (0x1fff_ffffu64 << 35) | (word & (7 << 32));
            m[w..w + 8].copy_from_slice(&huge.to_le_bytes());
            add(
                &format!("huge-list-{w}"),
                with_metadata(&prefix, &m),
                Any,
                "",
            );
            n += 1;
            if n == 40 {
                break;
            }
        }
    }
    assert!(n > 5, "found only {n} list pointers in the metadata");
    // Self-contradictory: metadata that does not match the frames.
    let (sample_prefix, sample_meta) = split_metadata(&sample_image()).unwrap();
    add(
        "meta-on-other-frames",
        with_metadata(&sample_prefix, &meta),
        Any,
        "",
    );
    add(
        "frames-of-other-meta",
        with_metadata(&prefix, &sample_meta),
        Any,
        "",
    );

    // Valid containers, impossible processes: restore must refuse them.
    let e = |name: &str, f: &dyn Fn(&mut ckpt_image::Image)| edited(dir, good, name, f);
    add(
        "pid-1",
        e("pid-1", &|i| i.processes[0].pid = 1),
        Refused,
        "pid 1 is in use",
    );
    add(
        "pid-0",
        e("pid-0", &|i| i.processes[0].pid = 0),
        Refused,
        "pid 0",
    );
    add(
        "pid-negative",
        e("pid-negative", &|i| i.processes[0].pid = -7),
        Refused,
        "pid -7",
    );
    add(
        "pid-huge",
        e("pid-huge", &|i| i.processes[0].pid = i32::MAX),
        Refused,
        "2147483647",
    );
    add(
        "no-threads",
        e("no-threads", &|i| i.processes[0].threads.clear()),
        Refused,
        "no threads",
    );
    add(
        "no-registers",
        e("no-registers", &|i| {
            i.processes[0].threads[0].regs = Registers::None
        }),
        Refused,
        "no registers",
    );
    add(
        "no-process",
        e("no-process", &|i| i.processes.clear()),
        Refused,
        "no process",
    );
    add(
        "arch",
        e("arch", &|i| i.host.arch = Arch::Aarch64),
        Refused,
        "Aarch64",
    );
    add(
        "seccomp",
        e("seccomp", &|i| i.processes[0].creds.seccomp_mode = 2),
        Refused,
        "seccomp",
    );
    add(
        "chroot",
        e("chroot", &|i| {
            i.processes[0].root = b"/nonexistent-ckpt-root".to_vec()
        }),
        Refused,
        "root directory",
    );
    add(
        "xfeatures",
        e("xfeatures", &|i| {
            if let Registers::X8664(x) = &mut i.processes[0].threads[0].regs {
                x.xfeatures = u64::MAX;
            }
        }),
        Refused,
        "XSAVE",
    );
    add(
        "rlimit-unknown",
        e("rlimit-unknown", &|i| {
            i.processes[0].rlimits.push(ckpt_image::Rlimit {
                resource: 999,
                name: String::new(),
                soft: 1,
                hard: 1,
            })
        }),
        Refused,
        "resource 999",
    );
    add(
        "cwd-relative",
        e("cwd-relative", &|i| {
            i.processes[0].cwd = b"tmp/../x".to_vec()
        }),
        Refused,
        "not an absolute path",
    );
    add(
        "cwd-nul",
        e("cwd-nul", &|i| i.processes[0].cwd = b"/tm\0p".to_vec()),
        Refused,
        "NUL",
    );
    add(
        "exe-relative",
        e("exe-relative", &|i| {
            i.processes[0].exe.path = b"../../bin/sh".to_vec()
        }),
        Refused,
        "not an absolute path",
    );
    add(
        "fd-path-dotdot",
        e("fd-path-dotdot", &|i| {
            for f in &mut i.files {
                if f.path.starts_with(b"/") {
                    f.path = b"/tmp/../etc/shadow".to_vec();
                    if let ckpt_image::FileKind::Regular(r) = &mut f.kind {
                        r.file.path = f.path.clone();
                    }
                }
            }
        }),
        Refused,
        "..",
    );
    add(
        "fd-path-nul",
        e("fd-path-nul", &|i| {
            for f in &mut i.files {
                if let ckpt_image::FileKind::Regular(r) = &mut f.kind {
                    f.path = b"/dev/null\0/etc/shadow".to_vec();
                    r.file.path = f.path.clone();
                }
            }
        }),
        Refused,
        "NUL",
    );
    v
}

/// The real image the corpus is made from: a target dumped (and killed).
fn real_image(dir: &TempDir) -> (Vec<u8>, Proc) {
    let mut p = Proc::spawn(dir, target_fixture(), &["2", "10", "0", "1"]);
    p.wait_line(|l| l.starts_with("READY"));
    let image = dir.join("good.ckpt");
    dump_kill(&mut p, &image);
    (std::fs::read(&image).unwrap(), p)
}

fn check_clean(o: &Measured, what: &str) {
    let err = stderr_of(&o.out);
    assert!(!err.contains("panicked"), "{what}: panicked: {err}");
    assert!(
        o.out.status.code().is_some(),
        "{what}: killed by a signal ({})\n{err}",
        o.out.status
    );
    if !o.out.status.success() {
        assert!(
            err.contains("ckpt: error:"),
            "{what}: failed without an error message: {err}"
        );
    }
}

#[test]
fn hostile_images_at_every_ckpt_entry_point() {
    let dir = TempDir::new("hostile");
    let (good, p) = real_image(&dir);
    let cases = corpus(&dir, &good);
    eprintln!("hostile: {} cases", cases.len());
    for c in &cases {
        let f = dir.join(format!("{}.ckpt", c.name));
        std::fs::write(&f, &c.bytes).unwrap();
        let fs = f.to_str().unwrap();
        let readers: [&[&str]; 2] = [&["show", fs], &["show", "--json", fs]];
        for args in readers {
            let o = run_measured(ckpt().args(args));
            let what = format!("{}: ckpt {args:?}", c.name);
            check_clean(&o, &what);
            if c.class == Class::Unreadable {
                assert!(!o.out.status.success(), "{what}: succeeded");
                let err = stderr_of(&o.out);
                assert!(
                    err.contains(fs),
                    "{what}: the error does not name the file: {err}"
                );
            }
        }
        for args in [["restore", "--check", fs], ["restore", "--detach", fs]] {
            let o = run_measured(ckpt().args(args));
            let what = format!("{}: ckpt {args:?}", c.name);
            check_clean(&o, &what);
            let must_fail = match c.class {
                Class::Unreadable | Class::Refused => true,
                // Page data is only read by a real restore.
                Class::BadPages => args[1] == "--detach",
                // A mutation may have hit plain data and left a valid image.
                Class::Any => false,
            };
            if must_fail {
                if o.out.status.success() && args[1] == "--detach" {
                    // Do not leave it running when the test fails.
                    drop(Proc::adopt(p.pid, &p.out));
                }
                assert!(
                    !o.out.status.success(),
                    "{what}: succeeded: {}",
                    String::from_utf8_lossy(&o.out.stdout)
                );
                let err = stderr_of(&o.out);
                assert!(
                    err.contains(c.expect),
                    "{what}: the error does not say '{}': {err}",
                    c.expect
                );
            } else if o.out.status.success() && args[1] == "--detach" {
                // Restored: a benign mutation. It must be the whole process.
                let mut r = Proc::adopt(p.pid, &p.out);
                r.wait_more_lines(2);
                assert_free(p.pid, &what);
                r.kill();
            }
            // Nothing is left at the saved pid.
            if args[1] == "--detach" {
                wait_gone(p.pid);
            }
        }
    }
}

#[test]
fn hostile_images_in_the_python_reader() {
    require!(require::python_modules(
        &["capnp", "zstandard", "lz4.block"],
        "scripts/install-deps"
    ));
    let dir = TempDir::new("hostile-py");
    let (good, _p) = real_image(&dir);
    let reader = repo_root().join("examples/python/ckpt_read.py");
    for c in corpus(&dir, &good) {
        let f = dir.join(format!("{}.ckpt", c.name));
        std::fs::write(&f, &c.bytes).unwrap();
        let o = run_measured(Command::new("python3").arg(&reader).arg(&f));
        let what = format!("{}: ckpt_read.py", c.name);
        let err = stderr_of(&o.out);
        assert!(!err.contains("Traceback"), "{what}: {err}");
        assert!(
            o.out.status.code().is_some(),
            "{what}: killed by {}",
            o.out.status
        );
        let code = o.out.status.code().unwrap();
        if c.class == Class::Unreadable {
            assert!(code == 1 || code == 2, "{what}: exit {code}: {err}");
            assert!(!err.trim().is_empty(), "{what}: no message");
        } else {
            assert!(code <= 2, "{what}: exit {code}: {err}");
        }
        if code != 0 {
            assert!(!err.trim().is_empty(), "{what}: failed without a message");
        }
    }
}

/// `ckpt mount --store STORE MNT` in the background; unmounted on drop.
struct Mount {
    mnt: PathBuf,
    child: std::process::Child,
}

impl Mount {
    fn new(store: &Path, mnt: &Path) -> Mount {
        std::fs::create_dir_all(mnt).unwrap();
        let child = ckpt()
            .args(["mount", "--store"])
            .arg(store)
            .arg(mnt)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let m = Mount {
            mnt: mnt.to_path_buf(),
            child,
        };
        let t = Instant::now();
        loop {
            let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
            if mounts
                .lines()
                .any(|l| l.split(' ').nth(1) == Some(mnt.to_str().unwrap()))
            {
                return m;
            }
            assert!(
                t.elapsed() < LIMIT,
                "ckptfs did not mount {}",
                mnt.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = signal(self.child.id() as i32, libc::SIGTERM);
        let t = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() && t.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

/// Read `path` (at most `cap` bytes) in a thread, under a deadline.
fn read_bounded(path: &Path, cap: usize) -> std::io::Result<Vec<u8>> {
    let p = path.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = (|| {
            use std::io::Read;
            let f = std::fs::File::open(&p)?;
            let mut v = Vec::new();
            f.take(cap as u64).read_to_end(&mut v)?;
            Ok(v)
        })();
        let _ = tx.send(r);
    });
    rx.recv_timeout(LIMIT)
        .unwrap_or_else(|_| panic!("reading {} hung", path.display()))
}

/// Every file under `dir`, recursively (not following symlinks).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => walk(&p, out),
            Ok(_) => out.push(p),
            Err(_) => {}
        }
    }
}

#[test]
fn hostile_images_in_ckptfs() {
    require!(require::path(
        "/dev/fuse",
        "the ckptfs tests mount FUSE filesystems"
    ));
    let dir = TempDir::new("hostile-fs");
    let (good, _p) = real_image(&dir);
    let store = dir.join("store");
    std::fs::create_dir_all(&store).unwrap();
    let cases = corpus(&dir, &good);
    for c in &cases {
        std::fs::write(store.join(format!("{}.ckpt", c.name)), &c.bytes).unwrap();
    }
    let mnt = dir.join("mnt");
    let mut m = Mount::new(&store, &mnt);
    for c in &cases {
        let d = mnt.join(&c.name);
        let info = read_bounded(&d.join("info"), 1 << 20)
            .unwrap_or_else(|e| panic!("{}: reading info: {e}", c.name));
        let info = String::from_utf8_lossy(&info);
        if c.class == Class::Unreadable {
            assert!(
                info.contains("cannot read"),
                "{}: info does not explain: {info}",
                c.name
            );
            let names: Vec<_> = std::fs::read_dir(&d)
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            assert_eq!(names.len(), 1, "{}: a broken image shows {names:?}", c.name);
        }
        let mut files = Vec::new();
        walk(&d, &mut files);
        for f in files {
            // mem files are as large as the address space: their start only.
            let cap = if f.file_name().is_some_and(|n| n == "mem") {
                1 << 20
            } else {
                16 << 20
            };
            let _ = read_bounded(&f, cap);
            assert!(m.alive(), "{}: ckptfs died reading {}", c.name, f.display());
        }
    }
    assert!(m.alive(), "ckptfs died");
    // Still serving.
    let root: Vec<_> = std::fs::read_dir(&mnt).unwrap().flatten().collect();
    assert!(
        root.len() >= cases.len(),
        "ckptfs lists {} entries",
        root.len()
    );
}
