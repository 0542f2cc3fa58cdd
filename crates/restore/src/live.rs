//! Finding live processes that hold a pipe or FIFO, so that a restored
//! end whose other end was outside the image is reconnected to the very
//! pipe the rest of the world still uses.

use crate::plan::fds::{PipeHolder, PipeQuery};
use std::collections::HashSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// `pipe:[INODE]` → INODE.
fn pipe_ino(link: &[u8]) -> Option<u64> {
    let s = link.strip_prefix(b"pipe:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Look through the fds of `pid` for the pipes still missing in `found`.
/// Returns true when everything is found.
fn scan_pid(pid: i32, wanted: &[PipeQuery<'_>], found: &mut [Option<PipeHolder>]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    for e in dir.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(link) = std::fs::read_link(e.path()) else {
            continue;
        };
        let link = link.as_os_str().as_bytes();
        let ino = pipe_ino(link);
        for (i, q) in wanted.iter().enumerate() {
            if found[i].is_some() {
                continue;
            }
            let hit = if q.fifo_path.is_empty() {
                ino == Some(q.ino)
            } else {
                link == q.fifo_path
                    && std::fs::metadata(e.path())
                        .map(|m| m.file_type().is_fifo() && m.ino() == q.ino)
                        .unwrap_or(false)
            };
            if hit {
                found[i] = Some(PipeHolder { pid, fd });
            }
        }
        if found.iter().all(Option::is_some) {
            return true;
        }
    }
    false
}

/// Whether a process running as `uid` could open the fds of `pid` through
/// /proc (roughly: it is `uid`'s own process), or the restorer opens them
/// for its own user.
fn reachable_as(pid: i32, uid: u32) -> bool {
    if uid == ckpt_sys::creds::geteuid() {
        return true;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .is_some_and(|v| {
            v.split_whitespace()
                .all(|x| x.parse::<u32>().ok() == Some(uid))
        })
}

/// A live holder of each queried pipe: the pids in `first` are looked at
/// first, then this process, then every other process in /proc; the search
/// stops when all are found. Opening `/proc/PID/fd/N` of the holder gives
/// a new open file description of the same pipe, which does not depend on
/// the holder staying alive (so this process counts as a holder too: a
/// library caller may hold the other end itself). When the restored
/// process runs as another `uid` than ours, only that user's processes
/// count: it could not have reached another user's pipe itself, and an
/// image must not connect it to one.
pub fn find_pipe_holders(
    wanted: &[PipeQuery<'_>],
    first: &[i32],
    uid: u32,
) -> Vec<Option<PipeHolder>> {
    let mut found = vec![None; wanted.len()];
    if wanted.is_empty() {
        return found;
    }
    let mut seen: HashSet<i32> = HashSet::new();
    let me = std::process::id() as i32;
    for &pid in first.iter().chain(std::iter::once(&me)) {
        if pid > 0
            && seen.insert(pid)
            && reachable_as(pid, uid)
            && scan_pid(pid, wanted, &mut found)
        {
            return found;
        }
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if seen.insert(pid) && reachable_as(pid, uid) && scan_pid(pid, wanted, &mut found) {
            break;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pipe_links() {
        assert_eq!(pipe_ino(b"pipe:[1234]"), Some(1234));
        assert_eq!(pipe_ino(b"socket:[1234]"), None);
        assert_eq!(pipe_ino(b"pipe:[x]"), None);
    }

    #[test]
    fn finds_our_own_pipe_and_not_a_missing_one() {
        let (r, w) = ckpt_sys::setup::pipe2(libc::O_CLOEXEC).unwrap();
        let ino = std::fs::metadata(format!("/proc/self/fd/{r}"))
            .unwrap()
            .ino();
        let q = [
            PipeQuery {
                ino,
                fifo_path: &[],
            },
            PipeQuery {
                ino: u64::MAX,
                fifo_path: &[],
            },
        ];
        let me = ckpt_sys::creds::geteuid();
        let got = find_pipe_holders(&q, &[], me);
        let h = got[0].expect("our pipe is found");
        assert_eq!(h.pid, std::process::id() as i32);
        // Another test's fds may come and go; ours are r and w.
        let link = std::fs::read_link(format!("/proc/self/fd/{}", h.fd)).unwrap();
        assert_eq!(link.to_string_lossy(), format!("pipe:[{ino}]"));
        assert_eq!(got[1], None);
        // Another user's process could not reach ours.
        if me == 0 {
            assert_eq!(find_pipe_holders(&q, &[], 65534)[0], None);
        }
        ckpt_sys::setup::close(r).unwrap();
        ckpt_sys::setup::close(w).unwrap();
    }
}
