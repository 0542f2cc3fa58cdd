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
    ckpt_sys::sys::kill(r.pid, libc::SIGUSR1).unwrap();
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
    for f in ["flock", "posix", "ofd"] {
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
}
