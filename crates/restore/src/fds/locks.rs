//! File locks and leases: taken again by the restored process itself,
//! once its fd table, mappings and files are final (so that no later
//! close of one of its fds drops a POSIX lock), by injected calls on the
//! saved fd: POSIX locks with F_SETLK (owned by the process), OFD locks
//! with F_OFD_SETLK and flock locks with flock(2) (owned by the open file
//! description: once each), leases with F_SETLEASE. Never waiting: a lock
//! someone else holds now fails the restore, naming the file; check()
//! says so first, from /proc/locks.

use crate::error::{Error, Result};
use crate::remote::Remote;
use crate::Report;
use ckpt_image::{FileKind, FileLock, Image, LockKind, LockType, Process};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

const F_OFD_SETLK: u64 = 37;
const F_SETLEASE: u64 = 1024;
const F_SETOWN_EX: u64 = 15;
const F_GETOWN_EX: u64 = 16;

/// "a POSIX write lock on bytes 0-99" / "... from byte 10 to the end".
fn describe(kind: LockKind, t: LockType, start: u64, length: u64) -> String {
    let kind = match kind {
        LockKind::Posix => "POSIX".to_string(),
        LockKind::Ofd => "OFD".to_string(),
        LockKind::Flock => "flock".to_string(),
        LockKind::Lease => "lease".to_string(),
        other => format!("{other:?} (a lock kind this restore does not know)"),
    };
    let t = match t {
        LockType::Read => "read".to_string(),
        LockType::Write => "write".to_string(),
        other => format!("{other:?} (a lock type this restore does not know)"),
    };
    if kind == "flock" || kind == "lease" {
        return format!("a {t} {kind}");
    }
    let a = if kind == "OFD" { "an" } else { "a" };
    match (start, length) {
        (0, 0) => format!("{a} {kind} {t} lock on the whole file"),
        (s, 0) => format!("{a} {kind} {t} lock from byte {s} to the end"),
        (s, l) => format!(
            "{a} {kind} {t} lock on bytes {s}-{}",
            s.saturating_add(l - 1)
        ),
    }
}

/// The path of the file a lock is on, for messages and checks.
fn path_of<'a>(image: &'a Image, l: &FileLock) -> Option<&'a [u8]> {
    let f = image.file(l.file)?;
    Some(match &f.kind {
        FileKind::Regular(r) if !r.file.path.is_empty() => &r.file.path,
        _ => &f.path,
    })
}

/// "fd 3: /var/db/x.sqlite".
fn what(image: &Image, l: &FileLock) -> String {
    let p = path_of(image, l)
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    format!("fd {}: {p}", l.fd)
}

/// One entry of /proc/locks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    kind: LockKind,
    write: bool,
    pid: i32,
    dev: (u64, u64),
    inode: u64,
    start: u64,
    /// Inclusive; u64::MAX for EOF.
    end: u64,
}

/// Parse /proc/locks (lines of blocked waiters, "->", are skipped).
fn parse_proc_locks(text: &str) -> Vec<Held> {
    text.lines()
        .filter(|l| !l.contains("->"))
        .filter_map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            let kind = match *t.get(1)? {
                "POSIX" => LockKind::Posix,
                "OFDLCK" => LockKind::Ofd,
                "FLOCK" => LockKind::Flock,
                "LEASE" => LockKind::Lease,
                _ => return None,
            };
            let write = *t.get(3)? == "WRITE";
            let pid = t.get(4)?.parse().ok()?;
            let mut di = t.get(5)?.split(':');
            let major = u64::from_str_radix(di.next()?, 16).ok()?;
            let minor = u64::from_str_radix(di.next()?, 16).ok()?;
            let inode = di.next()?.parse().ok()?;
            let start = t.get(6)?.parse().ok()?;
            let end = match *t.get(7)? {
                "EOF" => u64::MAX,
                e => e.parse().ok()?,
            };
            Some(Held {
                kind,
                write,
                pid,
                dev: (major, minor),
                inode,
                start,
                end,
            })
        })
        .collect()
}

/// Whether `held` keeps lock `l` (on a file of `dev`, `inode`) from
/// being taken.
fn conflicts(l: &FileLock, dev: (u64, u64), inode: u64, held: &Held) -> bool {
    if held.dev != dev || held.inode != inode {
        return false;
    }
    let write = l.lock_type == LockType::Write;
    match (l.kind, held.kind) {
        // fcntl locks, POSIX and OFD, see each other.
        (LockKind::Posix | LockKind::Ofd, LockKind::Posix | LockKind::Ofd) => {
            let end = if l.length == 0 {
                u64::MAX
            } else {
                l.start.saturating_add(l.length - 1)
            };
            (write || held.write) && l.start <= held.end && held.start <= end
        }
        (LockKind::Flock, LockKind::Flock) => write || held.write,
        // Leases see leases (a write lease is also refused while anyone
        // else has the file open, which /proc/locks does not show: the
        // restore says so if it happens).
        (LockKind::Lease, LockKind::Lease) => write || held.write,
        _ => false,
    }
}

/// Locks the restore could not take again because another process holds
/// a conflicting one now (from /proc/locks).
pub(crate) fn check(image: &Image, p: &Process, r: &mut Report) {
    let locks: Vec<&FileLock> = image.locks.iter().filter(|l| l.pid == p.pid).collect();
    if locks.is_empty() {
        return;
    }
    let held = parse_proc_locks(&std::fs::read_to_string("/proc/locks").unwrap_or_default());
    for l in locks {
        let Some(path) = path_of(image, l) else {
            continue;
        };
        let deleted = image
            .file(l.file)
            .is_some_and(|f| matches!(&f.kind, FileKind::Regular(rf) if rf.file.deleted));
        if deleted {
            continue; // made again: nobody else has it
        }
        let Ok(m) = std::fs::metadata(String::from_utf8_lossy(path).as_ref()) else {
            continue; // check_files says so
        };
        let dev = (libc::major(m.dev()) as u64, libc::minor(m.dev()) as u64);
        if let Some(h) = held.iter().find(|h| conflicts(l, dev, m.ino(), h)) {
            r.errors.push(format!(
                "{}: {} is held now by {}; the restore could not take back {}",
                what(image, l),
                describe(
                    h.kind,
                    if h.write {
                        LockType::Write
                    } else {
                        LockType::Read
                    },
                    h.start,
                    if h.end == u64::MAX {
                        0
                    } else {
                        h.end - h.start + 1
                    }
                ),
                holder(h.pid),
                describe(l.kind, l.lock_type, l.start, l.length),
            ));
        }
    }
}

/// "pid 123 (sqlite3)", or "another process" for OFD locks (pid -1).
fn holder(pid: i32) -> String {
    if pid <= 0 {
        return "another process".into();
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    format!("pid {pid} ({})", comm.trim())
}

/// F_RDLCK or F_WRLCK for the type of `l`; an error naming a lock type
/// this restore does not know (an image of a newer ckpt).
fn fcntl_type(image: &Image, main: &Remote, l: &FileLock) -> Result<i32> {
    fcntl_type_of(l.lock_type).ok_or_else(|| Error::Stub {
        pid: main.tid,
        what: format!(
            "{}: a lock of type {:?}, which this restore does not know",
            what(image, l),
            l.lock_type
        ),
    })
}

/// F_RDLCK or F_WRLCK; None for a lock type this restore does not know.
fn fcntl_type_of(t: LockType) -> Option<i32> {
    match t {
        LockType::Read => Some(libc::F_RDLCK),
        LockType::Write => Some(libc::F_WRLCK),
        _ => None,
    }
}

/// Take every saved lock of `p` again, in the process being built (at
/// `scratch`, room for a struct flock).
pub(crate) fn take(main: &mut Remote, image: &Image, p: &Process, scratch: u64) -> Result<()> {
    let mut n = 0;
    for l in image.locks.iter().filter(|l| l.pid == p.pid) {
        let t = fcntl_type(image, main, l)?;
        let (nr, args, flock) = match l.kind {
            LockKind::Flock => {
                let op = if t == libc::F_WRLCK {
                    libc::LOCK_EX
                } else {
                    libc::LOCK_SH
                } | libc::LOCK_NB;
                (libc::SYS_flock, [l.fd as u64, op as u64, 0], false)
            }
            LockKind::Lease => (libc::SYS_fcntl, [l.fd as u64, F_SETLEASE, t as u64], false),
            LockKind::Posix => (
                libc::SYS_fcntl,
                [l.fd as u64, libc::F_SETLK as u64, scratch],
                true,
            ),
            LockKind::Ofd => (libc::SYS_fcntl, [l.fd as u64, F_OFD_SETLK, scratch], true),
            other => {
                return Err(Error::Stub {
                    pid: main.tid,
                    what: format!(
                        "{}: a lock of kind {other:?}, which this restore does not know",
                        what(image, l)
                    ),
                })
            }
        };
        if flock {
            main.write(scratch, &flock_struct(l, t))?;
        }
        let mut r = main.raw("taking a file lock", nr, &args)?;
        if r == -(libc::EAGAIN as i64) && l.kind == LockKind::Lease && t == libc::F_RDLCK {
            r = lease_broken_to_read(main, l, scratch)?;
        }
        if r < 0 {
            let why = match -r as i32 {
                libc::EAGAIN | libc::EACCES => {
                    "someone else holds a conflicting lock now".to_string()
                }
                e => crate::error::os_msg(&std::io::Error::from_raw_os_error(e)),
            };
            return Err(Error::Stub {
                pid: main.tid,
                what: format!(
                    "{}: taking back {}: {why}",
                    what(image, l),
                    describe(l.kind, l.lock_type, l.start, l.length)
                ),
            });
        }
        n += 1;
    }
    if n > 0 {
        tracing::debug!(locks = n, "file locks taken again");
    }
    Ok(())
}

/// A read lease the file's opens for writing refuse (its own fd among
/// them: the process held a write lease that was being broken to a read
/// lease when it was saved): taken the way it came about. A write lease,
/// broken by an open for reading from here (ckpt's own, non-blocking:
/// refused, as the one that broke it was), so that the kernel holds it as
/// a lease being broken to a read lease. The process is not signalled
/// again: its fd has no SIGIO owner during the break (the owner it had,
/// which F_SETLEASE sets to the process itself, is put back). 0 or -errno.
fn lease_broken_to_read(main: &mut Remote, l: &FileLock, scratch: u64) -> Result<i64> {
    let fd = l.fd as u64;
    let r = main.raw(
        "taking a write lease",
        libc::SYS_fcntl,
        &[fd, F_SETLEASE, libc::F_WRLCK as u64],
    )?;
    if r < 0 {
        return Ok(r);
    }
    let r = main.raw(
        "reading the fd's owner",
        libc::SYS_fcntl,
        &[fd, F_GETOWN_EX, scratch],
    )?;
    if r < 0 {
        return Ok(r);
    }
    let owner = main.read(scratch, 8)?;
    main.raw(
        "clearing the fd's owner",
        libc::SYS_fcntl,
        &[fd, libc::F_SETOWN as u64, 0],
    )?;
    // The very file the fd holds (its /proc link), not the image's path.
    let broke = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/{}/fd/{fd}", main.tid));
    main.write(scratch, &owner)?;
    main.raw(
        "putting back the fd's owner",
        libc::SYS_fcntl,
        &[fd, F_SETOWN_EX, scratch],
    )?;
    Ok(match broke {
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => 0,
        _ => -(libc::EAGAIN as i64),
    })
}

/// struct flock (x86_64): l_type, l_whence (shorts), l_start, l_len, l_pid.
fn flock_struct(l: &FileLock, fcntl_type: i32) -> [u8; 32] {
    let mut b = [0u8; 32];
    let t = fcntl_type as i16;
    b[0..2].copy_from_slice(&t.to_ne_bytes());
    b[2..4].copy_from_slice(&(libc::SEEK_SET as i16).to_ne_bytes());
    b[8..16].copy_from_slice(&l.start.to_ne_bytes());
    b[16..24].copy_from_slice(&l.length.to_ne_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_locks_and_conflicts() {
        let held = parse_proc_locks(
            "1: POSIX  ADVISORY  WRITE 4242 fe:00:77 1073741825 1073741825\n\
             2: FLOCK  ADVISORY  READ  4243 fe:00:78 0 EOF\n\
             3: OFDLCK ADVISORY  READ  -1 fe:00:77 0 99\n\
             3: -> POSIX  ADVISORY  WRITE 4244 fe:00:77 0 EOF\n",
        );
        assert_eq!(held.len(), 3);
        assert_eq!(held[0].start, 1 << 30 | 1);
        assert_eq!(held[2].end, 99);
        let lock = |kind, lock_type, start, length| FileLock {
            kind,
            lock_type,
            start,
            length,
            ..Default::default()
        };
        let dev = (0xfe, 0);
        // A write lock on the reserved byte conflicts with sqlite's.
        let w = lock(LockKind::Posix, LockType::Write, 1 << 30 | 1, 1);
        assert!(conflicts(&w, dev, 77, &held[0]));
        assert!(!conflicts(&w, dev, 78, &held[0]));
        assert!(!conflicts(&w, (8, 1), 77, &held[0]));
        // Reads share; ranges that do not meet do not conflict.
        let r = lock(LockKind::Ofd, LockType::Read, 0, 0);
        assert!(!conflicts(&r, dev, 77, &held[2]));
        let w2 = lock(LockKind::Posix, LockType::Write, 100, 10);
        assert!(!conflicts(&w2, dev, 77, &held[2]));
        assert!(conflicts(
            &lock(LockKind::Posix, LockType::Write, 50, 0),
            dev,
            77,
            &held[2]
        ));
        // flock only sees flock.
        assert!(conflicts(
            &lock(LockKind::Flock, LockType::Write, 0, 0),
            dev,
            78,
            &held[1]
        ));
        assert!(!conflicts(
            &lock(LockKind::Flock, LockType::Read, 0, 0),
            dev,
            78,
            &held[1]
        ));
        assert!(!conflicts(
            &lock(LockKind::Posix, LockType::Write, 0, 0),
            dev,
            78,
            &held[1]
        ));
        assert_eq!(
            describe(LockKind::Posix, LockType::Write, 0, 0),
            "a POSIX write lock on the whole file"
        );
        assert_eq!(
            describe(LockKind::Ofd, LockType::Read, 5, 10),
            "an OFD read lock on bytes 5-14"
        );
    }

    #[test]
    fn flock_struct_layout() {
        let l = FileLock {
            lock_type: LockType::Write,
            start: 7,
            length: 3,
            ..Default::default()
        };
        let b = flock_struct(&l, fcntl_type_of(l.lock_type).unwrap());
        assert_eq!(i16::from_ne_bytes([b[0], b[1]]), libc::F_WRLCK as i16);
        assert_eq!(u64::from_ne_bytes(b[8..16].try_into().unwrap()), 7);
        assert_eq!(u64::from_ne_bytes(b[16..24].try_into().unwrap()), 3);
    }
}
