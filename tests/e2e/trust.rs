//! Issue 11: what a dump accepts, the restore brings back (deleted-file
//! mappings, file locks, process state); what the restore would fail on,
//! `--check` says first; the restore ends in bounded time. See
//! spec/security.md.

use crate::util::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

/// A Python script written into `dir` (the fixtures are C or installed
/// scripts; these are the tests' own).
fn py_script(dir: &TempDir, name: &str, src: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, src).unwrap();
    p
}

fn python(script: &Path, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new("python3");
    c.arg("-u").arg(script).args(args);
    c
}

/// Lines of /proc/PID/maps naming deleted files, without addresses.
fn deleted_maps(pid: i32) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let mut v: Vec<String> = maps
        .lines()
        .filter(|l| l.ends_with("(deleted)"))
        .map(|l| l.split_whitespace().skip(5).collect::<Vec<_>>().join(" "))
        .collect();
    v.sort();
    v.dedup();
    v
}

const DELETED_MAPS_PY: &str = r#"
import ctypes, mmap, multiprocessing, os, sys, tempfile, time
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
def raw_map(fd, size, flags):
    # Python's mmap keeps a dup of the fd: this one keeps none.
    a = libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, flags, fd, 0)
    assert a and a != ctypes.c_void_p(-1).value
    return (ctypes.c_char * size).from_address(a)
lock = multiprocessing.Lock()            # a POSIX semaphore: /dev/shm/sem.* mapped, unlinked
lock.acquire()
fd, path = tempfile.mkstemp(dir=sys.argv[1])
os.write(fd, b"deleted-temp " * 1000)
tmp = raw_map(fd, 13000, mmap.MAP_SHARED)  # a deleted temp file mapped shared, no fd
os.close(fd); os.unlink(path)
fd, path = tempfile.mkstemp(dir=sys.argv[1])
os.write(fd, b"private " * 2000)
priv = raw_map(fd, 16000, mmap.MAP_PRIVATE)  # and one mapped private, then written
priv[:7] = b"changed"
os.close(fd); os.unlink(path)
fd, path = tempfile.mkstemp(dir=sys.argv[1])
os.write(fd, b"held " * 100)
held_map = mmap.mmap(fd, 0)              # one an fd (mmap's own dup) still holds
os.close(fd); os.unlink(path)
mf = os.memfd_create("ckpt-test")
os.ftruncate(mf, 8192)
shm = raw_map(mf, 8192, mmap.MAP_SHARED)  # a memfd mapped, its fd closed
shm[:5] = b"memfd"
os.close(mf)
print("READY pid=%d" % os.getpid(), flush=True)
n = 0
while True:
    n += 1
    ok = (tmp[:13] == b"deleted-temp " and tmp[12987:13000] == b"deleted-temp "
          and priv[:7] == b"changed" and priv[7:15] == b" private"
          and held_map[:5] == b"held " and shm[:5] == b"memfd")
    held = not lock.acquire(False)
    tmp[13:20] = b"%07d" % (n % 10000000)
    print("tick n=%d ok=%d held=%d" % (n, ok, held), flush=True)
    if not ok:
        print("ERROR contents changed", flush=True)
    time.sleep(0.03)
"#;

/// A multiprocessing.Lock (a POSIX semaphore in a deleted /dev/shm file),
/// deleted temp files mapped shared and private, and a memfd whose fd was
/// closed: the dump saves their contents, the restore makes the files
/// again (at their old names, unlinked: /proc/PID/maps reads the same)
/// and the process finds everything as it was, the lock still held.
#[test]
fn deleted_file_mappings_are_saved_and_made_again() {
    let dir = TempDir::new("delmaps");
    let script = py_script(&dir, "delmaps.py", DELETED_MAPS_PY);
    let mut p = Proc::spawn_cmd(&dir, &mut python(&script, &[dir.path().to_str().unwrap()]));
    p.wait_line(|l| l.starts_with("READY"));
    p.wait_line(|l| l.contains("ok=1 held=1"));
    let before = deleted_maps(p.pid);
    assert!(
        before.iter().any(|m| m.starts_with("/dev/shm/sem.")),
        "no semaphore mapping: {before:?}"
    );
    let image = dir.join("delmaps.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    let n = r.line_count();
    r.wait_more_lines(3);
    let out = r.output();
    for l in out.lines().skip(n) {
        assert!(
            l.contains("ok=1 held=1"),
            "after the restore: {l}\n{}",
            tail(&out)
        );
    }
    assert_eq!(
        deleted_maps(r.pid),
        before,
        "the mappings are named differently"
    );
}

/// A dump that cannot read a mapped deleted file (nobody's: reading
/// /proc/PID/map_files needs CAP_CHECKPOINT_RESTORE) refuses by name, and
/// the process goes on: never "dump succeeds, restore refuses".
#[test]
fn unreadable_deleted_mapping_is_refused_at_dump() {
    let dir = TempDir::new("delmaps-nobody");
    chown_nobody(dir.path());
    let script = py_script(&dir, "delmaps.py", DELETED_MAPS_PY);
    let mut cmd = as_nobody(Path::new("/usr/bin/python3"));
    cmd.arg("-u").arg(&script).arg(dir.path());
    let p = Proc::spawn_cmd(&dir, &mut cmd);
    chown_nobody(&p.out);
    p.wait_line(|l| l.contains("ok=1 held=1"));
    let image = dir.join("nobody.ckpt");
    let o = run_timeout(
        as_nobody(Path::new(env!("CARGO_BIN_EXE_ckpt"))).args([
            "dump",
            &p.pid.to_string(),
            "-o",
            image.to_str().unwrap(),
        ]),
        LIMIT,
    );
    let err = assert_clean_failure(&o, "nobody's dump of deleted mappings");
    assert!(
        err.contains("maps a deleted file") && err.contains("CAP_CHECKPOINT_RESTORE"),
        "{err}"
    );
    assert!(!image.exists());
    assert!(p.alive());
    p.wait_more_lines(2);
}

/// Set `p`'s modification time (seconds, nanoseconds) back.
fn set_mtime(p: &Path, mtime: (i64, i64)) {
    let st = std::process::Command::new("touch")
        .arg("-m")
        .arg("-d")
        .arg(format!("@{}.{:09}", mtime.0, mtime.1))
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

/// The executable replaced in place with the same size and mtime, or by
/// another file (rename): the restore refuses naming it, unless
/// --force-files, which says so loudly.
#[test]
fn a_replaced_executable_is_refused_unless_forced() {
    use std::os::unix::fs::MetadataExt;
    let dir = TempDir::new("replaced-exe");
    let exe = dir.join("target-copy");
    std::fs::copy(target_fixture(), &exe).unwrap();
    let mut p = Proc::spawn(&dir, &exe, &["1", "10"]);
    p.wait_line(|l| l.starts_with("READY"));
    let image = dir.join("exe.ckpt");
    dump_kill(&mut p, &image);
    let md = std::fs::metadata(&exe).unwrap();
    let mtime = (md.mtime(), md.mtime_nsec());

    // In place: the last byte (section headers, not loaded) changed; same
    // size, mtime set back.
    let mut bytes = std::fs::read(&exe).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&exe)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
        .unwrap();
    set_mtime(&exe, mtime);
    let o = ckpt_timeout(&["restore", "--check", image.to_str().unwrap()], LIMIT);
    let err = assert_clean_failure(&o, "replaced in place");
    assert!(
        err.contains(&format!(
            "executable: {} is not the file that was saved",
            exe.display()
        )) && err.contains("change time")
            && err.contains("--force-files"),
        "{err}"
    );

    // Replaced by another file with the same contents and times.
    let other = dir.join("other");
    std::fs::copy(&exe, &other).unwrap();
    std::fs::rename(&other, &exe).unwrap();
    set_mtime(&exe, mtime);
    let o = ckpt_timeout(&["restore", "--check", image.to_str().unwrap()], LIMIT);
    let err = assert_clean_failure(&o, "replaced by rename");
    assert!(err.contains("another file"), "{err}");

    // Forced: restored, loudly.
    let o = ckpt_timeout(
        &[
            "restore",
            "--force-files",
            "--detach",
            image.to_str().unwrap(),
        ],
        LIMIT,
    );
    let err = stderr_of(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("WARNING: --force-files: executable"), "{err}");
    let r = Proc::adopt(p.pid, &p.out);
    r.wait_more_lines(2);
}

const SQLITE_PY: &str = r#"
import os, signal, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)
db.execute("create table if not exists t(x)")
db.execute("BEGIN IMMEDIATE")            # the write transaction: fcntl locks on the database
db.execute("insert into t values (42)")
commit = []
signal.signal(signal.SIGUSR1, lambda *a: commit.append(1))
print("READY pid=%d" % os.getpid(), flush=True)
n = 0
while True:
    n += 1
    if commit:
        db.execute("COMMIT")
        commit.clear()
        print("committed", flush=True)
    print("tick n=%d" % n, flush=True)
    time.sleep(0.03)
"#;

/// Whether another process can begin a write transaction on `db` now.
fn other_writer_can_begin(db: &Path) -> bool {
    let o = run_timeout(
        std::process::Command::new("python3").args([
            "-c",
            "import sqlite3,sys\n\
             db=sqlite3.connect(sys.argv[1],timeout=0,isolation_level=None)\n\
             try:\n    db.execute('BEGIN IMMEDIATE'); print('began')\n\
             except sqlite3.OperationalError as e: print('refused', e)",
            db.to_str().unwrap(),
        ]),
        LIMIT,
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.starts_with("began") || out.contains("locked"),
        "{out} {}",
        stderr_of(&o)
    );
    out.starts_with("began")
}

/// sqlite3 in a write transaction: its fcntl locks come back with it, so
/// that another writer still cannot begin one, and it can commit.
/// (Nothing touches the database between the dump and the restore: a
/// writer would roll the killed transaction's hot journal back.)
#[test]
fn sqlite_write_transaction_keeps_its_locks() {
    let dir = TempDir::new("sqlite");
    let db = dir.join("x.sqlite");
    let script = py_script(&dir, "sqlite.py", SQLITE_PY);
    let mut p = Proc::spawn_cmd(&dir, &mut python(&script, &[db.to_str().unwrap()]));
    p.wait_line(|l| l.starts_with("READY"));
    assert!(
        !other_writer_can_begin(&db),
        "the transaction holds no lock"
    );
    let image = dir.join("sqlite.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    r.wait_more_lines(2);
    assert!(
        !other_writer_can_begin(&db),
        "after the restore another writer began a transaction"
    );
    // The restored process can still commit what it wrote.
    ckpt_sys::proc::kill(r.pid, libc::SIGUSR1).unwrap();
    r.wait_line(|l| l == "committed");
    assert!(other_writer_can_begin(&db));
    let o = run_timeout(
        std::process::Command::new("python3").args([
            "-c",
            "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select x from t').fetchall())",
            db.to_str().unwrap(),
        ]),
        LIMIT,
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "[(42,)]");
}

const LOCKS_PY: &str = r#"
import fcntl, os, struct, sys, time
d = sys.argv[1]
fl = open(os.path.join(d, "flock"), "w")
fcntl.flock(fl, fcntl.LOCK_EX)                         # flock
px = open(os.path.join(d, "posix"), "r+")
fcntl.lockf(px, fcntl.LOCK_SH, 10, 5)                  # POSIX read lock on bytes 5-14
ofd = os.open(os.path.join(d, "ofd"), os.O_RDWR)
fcntl.fcntl(ofd, 37, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0))  # OFD write lock
ls = os.open(os.path.join(d, "lease"), os.O_RDONLY)
fcntl.fcntl(ls, 1024, fcntl.F_RDLCK)                   # a read lease
print("READY pid=%d" % os.getpid(), flush=True)
while True:
    print("tick", flush=True)
    time.sleep(0.03)
"#;

/// What another process can take now: flock exclusive, a POSIX write
/// lock on bytes 5-14, an OFD read lock.
fn others_can_lock(dir: &TempDir) -> (bool, bool, bool) {
    let o = run_timeout(
        std::process::Command::new("python3").args([
            "-c",
            "import fcntl,os,struct,sys\n\
             d=sys.argv[1]\n\
             def t(f):\n    try:\n        f(); return '1'\n    except OSError: return '0'\n\
             a=t(lambda: fcntl.flock(open(os.path.join(d,'flock')), fcntl.LOCK_EX|fcntl.LOCK_NB))\n\
             b=t(lambda: fcntl.lockf(open(os.path.join(d,'posix'),'r+'), fcntl.LOCK_EX|fcntl.LOCK_NB, 10, 5))\n\
             c=t(lambda: fcntl.fcntl(os.open(os.path.join(d,'ofd'),os.O_RDONLY), 37, struct.pack('hhqqi4x', fcntl.F_RDLCK, 0, 0, 0, 0)))\n\
             print(a+b+c)",
            dir.path().to_str().unwrap(),
        ]),
        LIMIT,
    );
    let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let b: Vec<bool> = s.chars().map(|c| c == '1').collect();
    assert_eq!(b.len(), 3, "{s} {}", stderr_of(&o));
    (b[0], b[1], b[2])
}

/// flock, POSIX and OFD locks come back after a restore; one that another
/// process took meanwhile makes the restore refuse, naming the file and
/// the holder.
#[test]
fn flock_posix_and_ofd_locks_come_back() {
    let dir = TempDir::new("locks");
    for f in ["flock", "posix", "ofd", "lease"] {
        std::fs::write(dir.join(f), vec![b'x'; 100]).unwrap();
    }
    let script = py_script(&dir, "locks.py", LOCKS_PY);
    let mut p = Proc::spawn_cmd(&dir, &mut python(&script, &[dir.path().to_str().unwrap()]));
    p.wait_line(|l| l.starts_with("READY"));
    assert_eq!(others_can_lock(&dir), (false, false, false));
    let image = dir.join("locks.ckpt");
    dump_kill(&mut p, &image);
    assert_eq!(others_can_lock(&dir), (true, true, true));

    let mut holder = Proc::spawn_cmd(
        &dir,
        std::process::Command::new("python3").args([
            "-c",
            "import fcntl,sys,time\n\
             f=open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_SH)\n\
             print('HOLDING', flush=True); time.sleep(60)",
            dir.join("flock").to_str().unwrap(),
        ]),
    );
    holder.wait_line(|l| l == "HOLDING");
    let o = ckpt_timeout(&["restore", "--check", image.to_str().unwrap()], LIMIT);
    let err = assert_clean_failure(&o, "a lock held by another process");
    assert!(
        err.contains(&format!(
            "{}: a read flock is held now by pid {}",
            dir.join("flock").display(),
            holder.pid
        )) && err.contains("could not take back a write flock"),
        "{err}"
    );
    holder.kill();

    let r = restore_detached(&image, &p.out, p.pid);
    r.wait_more_lines(2);
    assert_eq!(others_can_lock(&dir), (false, false, false));
    // And its lease.
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(dir.join("lease")).unwrap().ino();
    let locks = std::fs::read_to_string("/proc/locks").unwrap();
    assert!(
        locks.lines().any(|l| l.contains("LEASE")
            && l.contains("READ")
            && l.contains(&format!(" {} ", r.pid))
            && l.contains(&format!(":{ino} "))),
        "no read lease of pid {} on inode {ino}:\n{locks}",
        r.pid
    );
}

/// A copy of `image` with its model edited (owned by root, 0600).
fn crafted(image: &Path, to: &Path, f: impl FnOnce(&mut ckpt_image::Image)) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::copy(image, to).unwrap();
    let mut ed = ckpt_image::ImageEditor::open(to).unwrap();
    f(ed.image_mut());
    ed.commit().unwrap();
    drop(ed);
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// `ckpt restore --check` of `image` fails, saying `needle`.
fn check_says(image: &Path, what: &str, needle: &str) -> String {
    let o = ckpt_timeout(&["restore", "--check", image.to_str().unwrap()], LIMIT);
    let err = assert_clean_failure(&o, what);
    assert!(
        err.contains(needle),
        "{what}: the check does not say '{needle}':\n{err}"
    );
    let mut lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    let n = lines.len();
    lines.sort_unstable();
    lines.dedup();
    assert_eq!(lines.len(), n, "{what}: a line is said twice:\n{err}");
    err
}

const PIPE_SOCKET_PY: &str = r#"
import os, socket, sys, time
r, w = os.pipe()
os.write(w, b"queued" * 100)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(os.path.join(sys.argv[1], "s.sock"))
s.listen(4)
print("READY pid=%d" % os.getpid(), flush=True)
while True:
    print("tick", flush=True)
    time.sleep(0.05)
"#;

/// Crafted images: everything the restore would fail on, `--check` says
/// first (fd numbers above the limit, mappings outside the user address
/// space, segment selectors and XSAVE areas the kernel refuses, pipe
/// capacities it refuses or that cannot hold the data, a unix socket path
/// that cannot be bound); the untouched image passes.
#[test]
fn check_predicts_what_the_restore_would_fail_on() {
    let dir = TempDir::new("predict");
    let script = py_script(&dir, "ps.py", PIPE_SOCKET_PY);
    let mut p = Proc::spawn_cmd(&dir, &mut python(&script, &[dir.path().to_str().unwrap()]));
    p.wait_line(|l| l.starts_with("READY"));
    let image = dir.join("base.ckpt");
    dump_kill(&mut p, &image);
    let o = ckpt_timeout(&["restore", "--check", image.to_str().unwrap()], LIMIT);
    assert!(o.status.success(), "the untouched image: {}", stderr_of(&o));

    type Edit = Box<dyn Fn(&mut ckpt_image::Image)>;
    let pipe = |f: Box<dyn Fn(&mut ckpt_image::Pipe)>| -> Edit {
        Box::new(move |i: &mut ckpt_image::Image| {
            for file in &mut i.files {
                if let ckpt_image::FileKind::Pipe(p) = &mut file.kind {
                    if !p.data.is_empty() {
                        f(p);
                    }
                }
            }
        })
    };
    let regs = |f: Box<dyn Fn(&mut ckpt_image::X8664Regs)>| -> Edit {
        Box::new(move |i: &mut ckpt_image::Image| {
            if let ckpt_image::Registers::X8664(x) = &mut i.processes[0].threads[0].regs {
                f(x);
            }
        })
    };
    let cases: Vec<(&str, &str, Edit)> = vec![
        (
            "fd above the limit",
            "fds open at once",
            Box::new(|i| i.processes[0].fds.last_mut().unwrap().fd = 100_000),
        ),
        (
            "vma above the user address space",
            "not inside the user address space",
            Box::new(|i| {
                let v = &mut i.processes[0].vmas;
                let at = v.iter().position(|x| x.start >= 1 << 47).unwrap_or(v.len());
                v.insert(
                    at,
                    ckpt_image::Vma {
                        start: 1 << 47,
                        end: (1 << 47) + 4096,
                        prot: 3,
                        ..Default::default()
                    },
                );
            }),
        ),
        ("code segment", "code segment 0x43", regs(Box::new(|x| x.cs = 0x43))),
        ("stack segment", "stack segment 0x0", regs(Box::new(|x| x.ss = 0))),
        ("data segment", "fs selector 0x10", regs(Box::new(|x| x.fs = 0x10))),
        ("FS base", "FS base", regs(Box::new(|x| x.fs_base = 1 << 60))),
        (
            "compacted XSAVE",
            "compacted format",
            regs(Box::new(|x| x.xsave[527] = 0x80)),
        ),
        (
            "XSAVE reserved bytes",
            "reserved header bytes",
            regs(Box::new(|x| x.xsave[540] = 0xff)),
        ),
        (
            "MXCSR",
            "reserved MXCSR bits",
            regs(Box::new(|x| {
                x.xsave[512] |= 2;
                x.xsave[26] = 0xff;
            })),
        ),
        (
            "pipe capacity",
            "above fs.pipe-max-size",
            pipe(Box::new(|p| p.capacity = 1 << 30)),
        ),
        (
            "8 MiB queued in a pipe of capacity 0",
            "8388608 bytes buffered in a pipe that holds 65536",
            pipe(Box::new(|p| {
                p.capacity = 0;
                p.data = vec![7; 8 << 20];
            })),
        ),
        (
            "unix socket in a missing directory",
            "/nonexistent-ckpt-dir/s.sock: its directory /nonexistent-ckpt-dir: No such file or directory",
            Box::new(|i| {
                for f in &mut i.files {
                    if let ckpt_image::FileKind::UnixSocket(u) = &mut f.kind {
                        u.local_path = b"/nonexistent-ckpt-dir/s.sock".to_vec();
                        f.path = u.local_path.clone();
                    }
                }
            }),
        ),
        (
            "unix socket name too long",
            "a unix socket name longer than 108 bytes",
            Box::new(|i| {
                for f in &mut i.files {
                    if let ckpt_image::FileKind::UnixSocket(u) = &mut f.kind {
                        u.local_path = format!("/tmp/{}", "x".repeat(120)).into_bytes();
                    }
                }
            }),
        ),
    ];
    for (i, (what, needle, f)) in cases.into_iter().enumerate() {
        let img = dir.join(format!("crafted-{i}.ckpt"));
        crafted(&image, &img, f);
        check_says(&img, what, needle);
    }
}

/// The crafted pipe of the issue (8 MiB queued, capacity 0): the restore
/// itself refuses at once instead of hanging in a pipe write.
#[test]
fn a_crafted_pipe_does_not_hang_the_restore() {
    let dir = TempDir::new("pipehang");
    let script = py_script(&dir, "ps.py", PIPE_SOCKET_PY);
    let mut p = Proc::spawn_cmd(&dir, &mut python(&script, &[dir.path().to_str().unwrap()]));
    p.wait_line(|l| l.starts_with("READY"));
    let image = dir.join("base.ckpt");
    dump_kill(&mut p, &image);
    let img = dir.join("crafted.ckpt");
    crafted(&image, &img, |i| {
        for f in &mut i.files {
            if let ckpt_image::FileKind::Pipe(p) = &mut f.kind {
                if !p.data.is_empty() {
                    p.capacity = 0;
                    p.data = vec![7; 8 << 20];
                }
            }
        }
    });
    let t = std::time::Instant::now();
    let o = ckpt_timeout(&["restore", "--detach", img.to_str().unwrap()], LIMIT);
    let err = assert_clean_failure(&o, "crafted pipe");
    assert!(err.contains("bytes buffered in a pipe that holds"), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert_free_pid(p.pid);
}

/// Nothing runs at `pid` (no half-built process left).
fn assert_free_pid(pid: i32) {
    let t = std::time::Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        ckpt_sys::proc::wait::try_reap(pid);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "pid {pid} is still there"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A saved oom_score_adj comes back; one the restorer may not set (below
/// its own, without CAP_SYS_RESOURCE) is a warning, said before.
#[test]
fn oom_score_adj_comes_back_or_is_warned_about() {
    let dir = TempDir::new("oom");
    let mut p = Proc::spawn(&dir, target_fixture(), &["1", "10"]);
    p.wait_line(|l| l.starts_with("READY"));
    let image = dir.join("oom.ckpt");
    dump_kill(&mut p, &image);
    let raised = dir.join("raised.ckpt");
    crafted(&image, &raised, |i| i.processes[0].oom_score_adj = 700);
    let r = restore_detached(&raised, &p.out, p.pid);
    let v = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", r.pid)).unwrap();
    assert_eq!(v.trim(), "700");
    let mut r = r;
    r.kill();

    let own: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let caps = status_field(std::process::id() as i32, "CapEff").unwrap();
    let can_lower = u64::from_str_radix(&caps, 16).unwrap() & (1 << 24) != 0;
    let lowered = dir.join("lowered.ckpt");
    crafted(&image, &lowered, |i| i.processes[0].oom_score_adj = -500);
    let o = ckpt_timeout(&["restore", "--detach", lowered.to_str().unwrap()], LIMIT);
    let err = stderr_of(&o);
    assert!(o.status.success(), "{err}");
    let r = Proc::adopt(p.pid, &p.out);
    let v = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", r.pid)).unwrap();
    if can_lower {
        assert_eq!(v.trim(), "-500");
    } else {
        assert!(
            err.contains(&format!(
                "warning: oom_score_adj -500 cannot be restored: lowering it below the restorer's {own} needs CAP_SYS_RESOURCE"
            )),
            "{err}"
        );
        assert_eq!(v.trim(), own.to_string());
    }
}

/// A saved pid that is the process group (or session) of live processes
/// whose leader is gone: refused at once, naming them (no busy loop).
#[test]
fn a_taken_pid_names_what_holds_it() {
    let dir = TempDir::new("takenpid");
    let mut p = Proc::spawn(&dir, target_fixture(), &["1", "10"]);
    p.wait_line(|l| l.starts_with("READY"));
    let image = dir.join("img.ckpt");
    dump_kill(&mut p, &image);
    // A session leader that leaves a member behind: its pid stays taken.
    let o = run_timeout(
        std::process::Command::new("setsid").args([
            "-f",
            "sh",
            "-c",
            "sleep 30 </dev/null >/dev/null 2>&1 & echo $$",
        ]),
        LIMIT,
    );
    let leader: i32 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    let t = std::time::Instant::now();
    while Path::new(&format!("/proc/{leader}")).exists() {
        ckpt_sys::proc::wait::try_reap(leader);
        assert!(t.elapsed() < LIMIT, "the leader {leader} does not go");
        std::thread::sleep(Duration::from_millis(5));
    }
    let member: i32 = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    s.rsplit_once(") ")
                        .map(|x| x.1.split(' ').nth(2) == Some(&leader.to_string()))
                        .unwrap_or(false)
                })
                .unwrap_or(false)
        })
        .expect("the member of the group");
    let img = dir.join("at-leader.ckpt");
    crafted(&image, &img, |i| {
        i.root_pid = leader;
        i.processes[0].pid = leader;
        i.processes[0].threads[0].tid = leader;
    });
    let t = std::time::Instant::now();
    let o = ckpt_timeout(&["restore", "--detach", img.to_str().unwrap()], LIMIT);
    let err = assert_clean_failure(&o, "a pid held by a process group");
    assert!(
        err.contains(&format!(
            "pid {leader} is in use by the process group of \"sleep\" (pid {member})"
        )),
        "{err}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    let _ = ckpt_sys::proc::kill(member, libc::SIGKILL);
}

/// A restore that fails on an fd's file says why once, naming the fd
/// and the file: no "Is a directory: Is a directory (os error 21)".
#[test]
fn messages_say_each_thing_once() {
    let dir = TempDir::new("messages");
    let log = dir.join("app.log");
    let script = py_script(
        &dir,
        "log.py",
        "import sys,time\nf=open(sys.argv[1],'a')\nprint('READY',flush=True)\nwhile True: time.sleep(0.05)\n",
    );
    let mut p = Proc::spawn_cmd(&dir, &mut python(&script, &[log.to_str().unwrap()]));
    p.wait_line(|l| l == "READY");
    let image = dir.join("m.ckpt");
    dump_kill(&mut p, &image);
    std::fs::remove_file(&log).unwrap();
    std::fs::create_dir(&log).unwrap();
    let o = ckpt_timeout(&["restore", "--detach", image.to_str().unwrap()], LIMIT);
    let err = assert_clean_failure(&o, "a directory in place of the log");
    assert!(
        err.contains(&format!(": {}: Is a directory", log.display())),
        "{err}"
    );
    assert_eq!(err.matches("Is a directory").count(), 1, "{err}");
    assert!(!err.contains("(os error"), "{err}");
}
