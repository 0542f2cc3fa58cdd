//! Reading and parsing /proc files of the target.
//!
//! Every parser here fails loudly: a field that is missing or cannot be
//! parsed is an [`Error::Parse`] naming the file and the line, never a
//! silent 0. `stat` is parsed by the `procfs` crate; `status` by a small
//! parser of our own (the crate's errors name neither the line nor the
//! field, and we use a dozen of its lines); the generic part of `fdinfo`
//! (the crate has no fdinfo parser) also. `smaps` (mem/vmas.rs) and
//! `timers` (process/timers.rs) have their own parsers: the crate's smaps
//! reader loses the bytes of odd file names and the VmFlags it does not
//! know, and it has no timers parser.

use crate::error::{Error, Result};
use ckpt_sys::Pid;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub(crate) fn read(pid: Pid, path: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| io_err(pid, path, e))
}

pub(crate) fn read_string(pid: Pid, path: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| io_err(pid, path, e))
}

pub(crate) fn readlink(pid: Pid, path: &str) -> Result<Vec<u8>> {
    std::fs::read_link(path)
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .map_err(|e| io_err(pid, path, e))
}

/// ENOENT/ESRCH on a /proc file of the process means the process is gone.
pub(crate) fn io_err(pid: Pid, path: &str, e: std::io::Error) -> Error {
    if matches!(e.raw_os_error(), Some(libc::ESRCH))
        || (e.kind() == std::io::ErrorKind::NotFound
            && !Path::new(&format!("/proc/{pid}")).exists())
    {
        return Error::Exited { pid };
    }
    Error::Io {
        pid,
        what: format!("reading {path}"),
        source: e,
    }
}

/// A parse error at `line` (1-based; 0: the file as a whole) of `file`.
pub(crate) fn parse_err(pid: Pid, file: &str, line: usize, what: impl Into<String>) -> Error {
    Error::Parse {
        pid,
        file: file.to_string(),
        line,
        what: what.into(),
    }
}

/// A whole file that is one number (oom_score_adj, loginuid, ...).
pub(crate) fn read_num<T: std::str::FromStr>(pid: Pid, path: &str) -> Result<T> {
    let text = read_string(pid, path)?;
    let v = text.trim();
    v.parse()
        .map_err(|_| parse_err(pid, path, 1, format!("{v:?} is not a number")))
}

/// /proc/PID/stat (or task/TID/stat), parsed by the `procfs` crate; the
/// command name is kept as the kernel's bytes.
#[derive(Debug, Clone)]
pub(crate) struct Stat {
    pub comm: Vec<u8>,
    pub stat: procfs::process::Stat,
    pid: Pid,
    path: String,
}

impl Stat {
    pub fn read(pid: Pid, path: &str) -> Result<Stat> {
        let raw = read(pid, path)?;
        Self::parse(pid, path, &raw)
    }

    pub fn parse(pid: Pid, path: &str, raw: &[u8]) -> Result<Stat> {
        use procfs::FromRead;
        let bad = |what: String| parse_err(pid, path, 1, what);
        let open = raw.iter().position(|&b| b == b'(');
        let close = raw.iter().rposition(|&b| b == b')');
        let comm = match (open, close) {
            (Some(o), Some(c)) if o < c => raw[o + 1..c].to_vec(),
            _ => return Err(bad("no \"(comm)\"".into())),
        };
        // The crate's errors say where in the crate, not what is wrong.
        let stat = procfs::process::Stat::from_read(raw).map_err(|_| {
            let rest = String::from_utf8_lossy(&raw[close.unwrap_or(0) + 1..]);
            let rest: String = rest.trim().chars().take(200).collect();
            bad(format!("{rest:?} are not the fields of proc(5)"))
        })?;
        Ok(Stat {
            comm,
            stat,
            pid,
            path: path.to_string(),
        })
    }

    /// A field the kernel may leave out (`Option` in the crate), required
    /// here: `n` is its number in proc(5).
    pub fn need<T>(&self, v: Option<T>, n: usize, name: &str) -> Result<T> {
        v.ok_or_else(|| self.bad(format!("no field {n} ({name})")))
    }

    /// An error about this file's (only) line.
    pub fn bad(&self, what: String) -> Error {
        parse_err(self.pid, &self.path, 1, what)
    }

    pub fn state(&self) -> String {
        self.stat.state.to_string()
    }
}

/// "Key:\tvalue" lines of /proc/PID/status, with their line numbers.
#[derive(Debug, Clone)]
pub(crate) struct Status {
    pid: Pid,
    path: String,
    /// (line number, key, value trimmed).
    lines: Vec<(usize, String, String)>,
}

impl Status {
    pub fn read(pid: Pid, path: &str) -> Result<Status> {
        Self::parse(pid, path, &read_string(pid, path)?)
    }

    pub fn parse(pid: Pid, path: &str, text: &str) -> Result<Status> {
        let mut lines = Vec::new();
        for (i, l) in text.lines().enumerate() {
            if l.is_empty() {
                continue;
            }
            let Some((k, v)) = l.split_once(':') else {
                return Err(parse_err(pid, path, i + 1, format!("{l:?}: no ':'")));
            };
            lines.push((i + 1, k.trim().to_string(), v.trim().to_string()));
        }
        Ok(Status {
            pid,
            path: path.to_string(),
            lines,
        })
    }

    /// The line number and value of `key`.
    pub fn get(&self, key: &str) -> Result<(usize, &str)> {
        self.lines
            .iter()
            .find(|(_, k, _)| k == key)
            .map(|(n, _, v)| (*n, v.as_str()))
            .ok_or_else(|| parse_err(self.pid, &self.path, 0, format!("no \"{key}:\" line")))
    }

    fn bad(&self, line: usize, key: &str, v: &str, what: &str) -> Error {
        parse_err(
            self.pid,
            &self.path,
            line,
            format!("{key}: {v:?} is not {what}"),
        )
    }

    /// A decimal number.
    pub fn num<T: std::str::FromStr>(&self, key: &str) -> Result<T> {
        let (n, v) = self.get(key)?;
        v.parse().map_err(|_| self.bad(n, key, v, "a number"))
    }

    /// A number in `radix` (16: masks, 8: umask).
    pub fn radix(&self, key: &str, radix: u32) -> Result<u64> {
        let (n, v) = self.get(key)?;
        u64::from_str_radix(v, radix)
            .map_err(|_| self.bad(n, key, v, if radix == 16 { "hexadecimal" } else { "octal" }))
    }

    /// A list of decimal numbers (Uid, Gid, Groups).
    pub fn nums<T: std::str::FromStr>(&self, key: &str) -> Result<Vec<T>> {
        let (n, v) = self.get(key)?;
        v.split_whitespace()
            .map(|x| {
                x.parse()
                    .map_err(|_| self.bad(n, key, v, "a list of numbers"))
            })
            .collect()
    }

    /// Exactly four ids: real, effective, saved, filesystem (Uid, Gid).
    pub fn ids(&self, key: &str) -> Result<[u32; 4]> {
        let v: Vec<u32> = self.nums(key)?;
        v.as_slice().try_into().map_err(|_| {
            let (n, text) = self.get(key).unwrap_or((0, ""));
            self.bad(n, key, text, "four ids")
        })
    }
}

/// Split a NUL-separated list (cmdline, environ); a trailing NUL ends the last item.
pub(crate) fn split_nul(b: &[u8]) -> Vec<Vec<u8>> {
    if b.is_empty() {
        return Vec::new();
    }
    let b = b.strip_suffix(&[0]).unwrap_or(b);
    b.split(|&c| c == 0).map(<[u8]>::to_vec).collect()
}

/// Thread ids of a process, ascending.
pub(crate) fn list_tids(pid: Pid) -> Result<Vec<Pid>> {
    let path = format!("/proc/{pid}/task");
    list_numbered(pid, &path)
}

/// The children of every thread of a process (/proc/PID/task/*/children),
/// ascending. A thread that exits meanwhile is skipped.
pub(crate) fn list_children(pid: Pid) -> Result<Vec<Pid>> {
    let mut v = Vec::new();
    for tid in list_tids(pid)? {
        let path = format!("/proc/{pid}/task/{tid}/children");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(io_err(pid, &path, e)),
        };
        for w in text.split_whitespace() {
            let c = w
                .parse()
                .map_err(|_| parse_err(pid, &path, 1, format!("{w:?} is not a pid")))?;
            v.push(c);
        }
    }
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

/// The numeric entries of a /proc directory (task, fd), ascending.
pub(crate) fn list_numbered(pid: Pid, path: &str) -> Result<Vec<i32>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(path).map_err(|e| io_err(pid, path, e))? {
        let e = e.map_err(|e| io_err(pid, path, e))?;
        let name = e.file_name();
        let n = name.to_str().and_then(|s| s.parse().ok()).ok_or_else(|| {
            parse_err(
                pid,
                path,
                0,
                format!("entry {:?} is not a number", name.to_string_lossy()),
            )
        })?;
        v.push(n);
    }
    v.sort_unstable();
    Ok(v)
}

/// Linux's dev_t encoding of (major, minor), as glibc's makedev.
pub(crate) fn makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xffff_f000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0xff)
}

pub(crate) fn major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)
}

pub(crate) fn minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0xff)
}

/// The value of `key` in a line of "key: value" / "key:value" tokens, such
/// as "tfd:        5 events:       19 data: ..." or "inotify wd:1 ino:83d ...".
pub(crate) fn token_after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let key = key.strip_suffix(':').unwrap_or(key);
    let mut it = line.split_whitespace();
    while let Some(t) = it.next() {
        if let Some((k, v)) = t.split_once(':') {
            if k == key {
                return Some(if v.is_empty() {
                    it.next().unwrap_or("")
                } else {
                    v
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stat line whose field n (4 and up, as in proc(5)) is n, up to `last`.
    fn stat_line(comm: &str, last: usize) -> Vec<u8> {
        let fields: Vec<String> = (4..=last).map(|n| n.to_string()).collect();
        format!("123 ({comm}) S {}\n", fields.join(" ")).into_bytes()
    }

    #[test]
    fn stat_with_odd_comm() {
        let s = Stat::parse(1, "/proc/1/stat", &stat_line("a) b (c", 52)).unwrap();
        assert_eq!(s.comm, b"a) b (c");
        assert_eq!(s.state(), "S");
        assert_eq!(s.stat.ppid, 4);
        assert_eq!(s.stat.pgrp, 5);
        assert_eq!(s.stat.tty_nr, 7);
        assert_eq!(s.stat.nice, 19);
        assert_eq!(s.need(s.stat.exit_signal, 38, "exit_signal").unwrap(), 38);
        assert_eq!(s.need(s.stat.rt_priority, 40, "rt_priority").unwrap(), 40);
        assert_eq!(s.need(s.stat.policy, 41, "policy").unwrap(), 41);
        assert_eq!(s.need(s.stat.env_end, 51, "env_end").unwrap(), 51);
    }

    #[test]
    fn stat_fails_loudly() {
        let e = Stat::parse(1, "/proc/1/stat", b"123 (a) S 1 x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "pid 1: cannot parse /proc/1/stat line 1: \"S 1 x\" are not the fields of proc(5)"
        );
        let e = Stat::parse(1, "/proc/1/stat", b"123 a S 1").unwrap_err();
        assert!(e.to_string().contains("(comm)"), "{e}");
        // Old kernels end early: the fields they lack are errors when used.
        let s = Stat::parse(1, "/proc/1/stat", &stat_line("a", 37)).unwrap();
        let e = s.need(s.stat.policy, 41, "policy").unwrap_err();
        assert_eq!(
            e.to_string(),
            "pid 1: cannot parse /proc/1/stat line 1: no field 41 (policy)"
        );
    }

    #[test]
    fn status_fields_and_errors() {
        let text = "Name:\tcat\nUmask:\t0022\nTgid:\t7\nUid:\t1\t2\t3\t4\nGroups:\t\nCapEff:\t00000000a80425fb\nBad:\tzz\nShort:\t1 2\n";
        let s = Status::parse(7, "/proc/7/status", text).unwrap();
        assert_eq!(s.radix("Umask", 8).unwrap(), 0o22);
        assert_eq!(s.num::<i32>("Tgid").unwrap(), 7);
        assert_eq!(s.ids("Uid").unwrap(), [1, 2, 3, 4]);
        assert!(s.nums::<u32>("Groups").unwrap().is_empty());
        assert_eq!(s.radix("CapEff", 16).unwrap(), 0xa80425fb);
        assert_eq!(
            s.num::<u32>("Bad").unwrap_err().to_string(),
            "pid 7: cannot parse /proc/7/status line 7: Bad: \"zz\" is not a number"
        );
        assert_eq!(
            s.ids("Short").unwrap_err().to_string(),
            "pid 7: cannot parse /proc/7/status line 8: Short: \"1 2\" is not four ids"
        );
        assert_eq!(
            s.num::<u32>("Seccomp").unwrap_err().to_string(),
            "pid 7: cannot parse /proc/7/status: no \"Seccomp:\" line"
        );
        let e = Status::parse(7, "/proc/7/status", "Name:\tx\nno colon\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn nul_split() {
        assert_eq!(split_nul(b"a\0bc\0"), vec![b"a".to_vec(), b"bc".to_vec()]);
        assert_eq!(split_nul(b"a\0\0"), vec![b"a".to_vec(), b"".to_vec()]);
        assert!(split_nul(b"").is_empty());
    }

    #[test]
    fn dev_encoding_roundtrip() {
        let d = makedev(136, 3);
        assert_eq!((major(d), minor(d)), (136, 3));
        let d = makedev(259, 0x12345);
        assert_eq!((major(d), minor(d)), (259, 0x12345));
        assert_eq!(makedev(8, 1), 0x801);
    }

    #[test]
    fn tokens() {
        let l = "tfd:        5 events:       19 data:         abc  pos:0 ino:1 sdev:2";
        assert_eq!(token_after(l, "tfd:"), Some("5"));
        assert_eq!(token_after(l, "events:"), Some("19"));
        assert_eq!(token_after(l, "data:"), Some("abc"));
        assert_eq!(token_after(l, "ino:"), Some("1"));
        let l = "inotify wd:2 ino:83d sdev:800001 mask:fce ignored_mask:0 fhandle-bytes:8";
        assert_eq!(token_after(l, "mask"), Some("fce"));
        assert_eq!(token_after(l, "wd"), Some("2"));
    }
}
