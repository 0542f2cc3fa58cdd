//! File locks and leases the process holds, from the "lock:" lines of
//! /proc/PID/fdinfo/N: flock locks, OFD locks and leases belong to an open
//! file description (saved once each, through one of its fds); POSIX
//! (fcntl) locks belong to the process and show on every fd of the file
//! (saved once, through an fd whose access mode allows taking them again:
//! a write lock needs a writable fd).
//!
//! A line reads `lock:\t1: POSIX  ADVISORY  WRITE 1234 fe:00:5678 0 EOF`:
//! kind, mode, type, pid, device:inode, first byte, last byte (or EOF).

use super::RawFd;
use crate::error::{Error, Result};
use ckpt_image::{Fd, FileLock, LockKind, LockType};
use ckpt_sys::Pid;
use std::collections::{BTreeMap, HashSet};

/// One lock line, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    kind: LockKind,
    lock_type: LockType,
    inode: u64,
    start: u64,
    /// 0: to the end of the file.
    length: u64,
}

/// Parse the part of a lock line after "lock:". None: a lease being
/// broken to no lease at all.
///
/// A lease being broken (its holder was told, by its lease signal, to
/// give it up or downgrade it; the one who broke it waits or was told
/// EWOULDBLOCK) is saved as the lease it is being broken to, the type the
/// line shows: what the kernel leaves once the holder downgrades or the
/// break time runs out. The restored holder is not told again.
fn parse(s: &str) -> std::result::Result<Option<Line>, String> {
    let t: Vec<&str> = s.split_whitespace().collect();
    // "1:", kind, mode, type, pid, dev:inode, start, end
    if t.len() < 8 {
        return Err("fewer fields than a lock line has".into());
    }
    let kind = match (t[1], t[2]) {
        ("POSIX", "ADVISORY") => LockKind::Posix,
        ("FLOCK", "ADVISORY") => LockKind::Flock,
        ("OFDLCK", "ADVISORY") => LockKind::Ofd,
        ("LEASE", "ACTIVE") => LockKind::Lease,
        ("LEASE", "BREAKING") if t[3] == "UNLCK" => return Ok(None),
        ("LEASE", "BREAKING") => LockKind::Lease,
        ("LEASE", state) => return Err(format!("a lease in state {state} cannot be saved")),
        (k, m) => return Err(format!("a {k} {m} lock cannot be saved")),
    };
    let lock_type = match t[3] {
        "READ" => LockType::Read,
        "WRITE" => LockType::Write,
        other => return Err(format!("lock type {other} cannot be saved")),
    };
    let inode = t[5]
        .rsplit(':')
        .next()
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| format!("{:?} is not device:inode", t[5]))?;
    let start: u64 = t[6]
        .parse()
        .map_err(|_| format!("{:?} is not an offset", t[6]))?;
    let length = match t[7] {
        "EOF" => 0,
        end => {
            let end: u64 = end
                .parse()
                .map_err(|_| format!("{end:?} is not an offset"))?;
            end.checked_sub(start)
                .and_then(|l| l.checked_add(1))
                .ok_or_else(|| format!("range {start}-{end} is empty"))?
        }
    };
    Ok(Some(Line {
        kind,
        lock_type,
        inode,
        start,
        length,
    }))
}

/// Whether the access mode of fd `f` allows taking a lock of `t` again.
fn access_fits(f: &RawFd, t: LockType) -> bool {
    match (f.info.flags & 3) as i32 {
        libc::O_RDWR => true,
        libc::O_WRONLY => t == LockType::Write,
        _ => t == LockType::Read,
    }
}

/// Every lock the process holds, once each, through the fd to take it
/// again with (`fds`: the saved fd table, for the open file ids).
pub(crate) fn save(pid: Pid, raw: &[RawFd], fds: &[Fd]) -> Result<Vec<FileLock>> {
    let file_of: BTreeMap<i32, u32> = fds.iter().map(|f| (f.fd, f.file)).collect();
    let mut out = Vec::new();
    let mut seen: HashSet<(u32, u64, u64, bool)> = HashSet::new();
    let mut posix: Vec<(Line, i32)> = Vec::new();
    for f in raw {
        for (n, l) in f.info.lines_with("lock:") {
            let line =
                parse(&l["lock:".len()..]).map_err(|what| match what.contains("cannot") {
                    true => Error::Fd {
                        fd: f.fd,
                        what: format!("{}: {what}", String::from_utf8_lossy(&f.link)),
                    },
                    false => f.info.err(n, what),
                })?;
            let Some(line) = line else { continue };
            let file = file_of[&f.fd];
            if line.kind == LockKind::Posix {
                if !posix.iter().any(|(p, _)| *p == line) {
                    posix.push((line, f.fd));
                }
                continue;
            }
            let key = (file, line.start, line.length, line.kind == LockKind::Lease);
            if seen.insert(key) {
                out.push(FileLock {
                    kind: line.kind,
                    lock_type: line.lock_type,
                    start: line.start,
                    length: line.length,
                    pid,
                    file,
                    fd: f.fd,
                });
            }
        }
    }
    // A POSIX lock: through an fd of its file whose access mode allows it.
    for (line, first) in posix {
        let ino = |f: &RawFd| f.md.as_ref().map(std::os::unix::fs::MetadataExt::ino);
        let fd = raw
            .iter()
            .filter(|f| ino(f) == Some(line.inode) && access_fits(f, line.lock_type))
            .map(|f| f.fd)
            .next()
            .unwrap_or(first);
        out.push(FileLock {
            kind: LockKind::Posix,
            lock_type: line.lock_type,
            start: line.start,
            length: line.length,
            pid,
            file: file_of[&fd],
            fd,
        });
    }
    if !out.is_empty() {
        tracing::debug!(locks = out.len(), "file locks saved");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_lines() {
        let l = parse("\t1: POSIX  ADVISORY  WRITE 1234 fe:00:5678 1073741824 1073741824")
            .unwrap()
            .unwrap();
        assert_eq!(
            l,
            Line {
                kind: LockKind::Posix,
                lock_type: LockType::Write,
                inode: 5678,
                start: 1 << 30,
                length: 1,
            }
        );
        let l = parse("\t2: OFDLCK ADVISORY  READ  -1 08:01:99 0 EOF")
            .unwrap()
            .unwrap();
        assert_eq!(
            (l.kind, l.lock_type, l.length),
            (LockKind::Ofd, LockType::Read, 0)
        );
        let l = parse("\t3: FLOCK  ADVISORY  WRITE 77 08:01:99 0 EOF")
            .unwrap()
            .unwrap();
        assert_eq!(l.kind, LockKind::Flock);
        let l = parse("\t4: LEASE  ACTIVE    READ  77 08:01:99 0 EOF")
            .unwrap()
            .unwrap();
        assert_eq!(l.kind, LockKind::Lease);
        // Being broken: saved as what it is broken to.
        assert_eq!(
            parse("\t5: LEASE  BREAKING  UNLCK 77 08:01:99 0 EOF"),
            Ok(None)
        );
        let l = parse("\t5: LEASE  BREAKING  READ 77 08:01:99 0 EOF")
            .unwrap()
            .unwrap();
        assert_eq!((l.kind, l.lock_type), (LockKind::Lease, LockType::Read));
        assert!(parse("\t5: LEASE  BREAKER  READ 77 08:01:99 0 EOF")
            .unwrap_err()
            .contains("cannot be saved"));
        assert!(parse("\t6: DELEG  ACTIVE    READ 77 08:01:99 0 EOF")
            .unwrap_err()
            .contains("cannot be saved"));
        assert!(parse("\t1: POSIX ADVISORY WRITE").is_err());
        assert!(parse("\t1: POSIX  ADVISORY  WRITE 1 08:01:9 10 5").is_err());
    }
}
