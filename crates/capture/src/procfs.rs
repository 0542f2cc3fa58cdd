//! Reading and parsing /proc files of the target.

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

pub(crate) fn parse_err(pid: Pid, file: &str, what: impl Into<String>) -> Error {
    Error::Parse {
        pid,
        file: file.to_string(),
        what: what.into(),
    }
}

/// /proc/PID/stat (or task/TID/stat): comm and the fields after it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stat {
    pub comm: Vec<u8>,
    /// fields[0] is field 3 (state), fields[n - 3] is field n (1-based, man proc).
    pub fields: Vec<String>,
}

impl Stat {
    pub fn read(pid: Pid, path: &str) -> Result<Stat> {
        let raw = read(pid, path)?;
        Self::parse(&raw).ok_or_else(|| parse_err(pid, path, "no ')' after comm"))
    }

    pub fn parse(raw: &[u8]) -> Option<Stat> {
        let open = raw.iter().position(|&b| b == b'(')?;
        let close = raw.iter().rposition(|&b| b == b')')?;
        let comm = raw.get(open + 1..close)?.to_vec();
        let rest = String::from_utf8_lossy(raw.get(close + 1..)?);
        Some(Stat {
            comm,
            fields: rest.split_whitespace().map(str::to_string).collect(),
        })
    }

    /// Field number `n` as in proc(5), starting at 1 (pid).
    pub fn field(&self, n: usize) -> &str {
        n.checked_sub(3)
            .and_then(|i| self.fields.get(i))
            .map(String::as_str)
            .unwrap_or("0")
    }

    pub fn num<T: std::str::FromStr + Default>(&self, n: usize) -> T {
        self.field(n).parse().unwrap_or_default()
    }

    pub fn state(&self) -> String {
        self.field(3).to_string()
    }
}

/// "Key:\tvalue" lines of /proc/PID/status.
#[derive(Debug, Clone, Default)]
pub(crate) struct Status {
    pub lines: Vec<(String, String)>,
}

impl Status {
    pub fn read(pid: Pid, path: &str) -> Result<Status> {
        Ok(Self::parse(&read_string(pid, path)?))
    }

    pub fn parse(s: &str) -> Status {
        Status {
            lines: s
                .lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn nums<T: std::str::FromStr>(&self, key: &str) -> Vec<T> {
        self.get(key)
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect()
    }

    pub fn num<T: std::str::FromStr + Default>(&self, key: &str) -> T {
        self.nums(key).into_iter().next().unwrap_or_default()
    }

    pub fn hex(&self, key: &str) -> u64 {
        u64::from_str_radix(self.get(key).unwrap_or("0"), 16).unwrap_or(0)
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
    let mut v: Vec<Pid> = std::fs::read_dir(&path)
        .map_err(|e| io_err(pid, &path, e))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
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

/// One line of /proc/PID/fdinfo/N: "key:\tvalue" pairs plus the raw text.
#[derive(Debug, Clone, Default)]
pub(crate) struct FdInfo {
    pub pos: u64,
    /// Octal "flags:" value, O_CLOEXEC included.
    pub flags: u32,
    pub mnt_id: u64,
    pub ino: u64,
    pub text: String,
}

impl FdInfo {
    pub fn parse(text: String) -> FdInfo {
        let mut fi = FdInfo::default();
        for l in text.lines() {
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k {
                "pos" => fi.pos = v.parse().unwrap_or(0),
                "flags" => fi.flags = u32::from_str_radix(v, 8).unwrap_or(0),
                "mnt_id" => fi.mnt_id = v.parse().unwrap_or(0),
                "ino" => fi.ino = v.parse().unwrap_or(0),
                _ => {}
            }
            if k == "ino" {
                break; // the generic part ends here; kind-specific lines follow
            }
        }
        fi.text = text;
        fi
    }

    /// Value of a "key: value" line (first match), trimmed.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim())
        })
    }
}

/// Parse "(sec, nsec)" into nanoseconds.
pub(crate) fn parse_timespec_pair(s: &str) -> Option<u64> {
    let s = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (a, b) = s.split_once(',')?;
    let sec: u64 = a.trim().parse().ok()?;
    let nsec: u64 = b.trim().parse().ok()?;
    Some(sec.saturating_mul(1_000_000_000).saturating_add(nsec))
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

    #[test]
    fn stat_with_odd_comm() {
        let s = Stat::parse(b"123 (a) b (c) S 1 123 123 0 -1").unwrap();
        assert_eq!(s.comm, b"a) b (c");
        assert_eq!(s.state(), "S");
        assert_eq!(s.field(4), "1");
        assert_eq!(s.num::<i32>(5), 123);
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
    fn fdinfo_and_tokens() {
        let fi = FdInfo::parse(
            "pos:\t12\nflags:\t02100002\nmnt_id:\t30\nino:\t777\ntfd:        5 events:       19 data:         abc  pos:0 ino:1 sdev:2\n".into(),
        );
        assert_eq!(fi.pos, 12);
        assert_eq!(fi.flags, 0o2100002);
        assert_eq!(fi.mnt_id, 30);
        assert_eq!(fi.ino, 777);
        let l = fi.text.lines().nth(4).unwrap();
        assert_eq!(token_after(l, "tfd:"), Some("5"));
        assert_eq!(token_after(l, "events:"), Some("19"));
        assert_eq!(token_after(l, "data:"), Some("abc"));
        assert_eq!(token_after(l, "ino:"), Some("1"));
        let l = "inotify wd:2 ino:83d sdev:800001 mask:fce ignored_mask:0 fhandle-bytes:8";
        assert_eq!(token_after(l, "mask"), Some("fce"));
        assert_eq!(token_after(l, "wd"), Some("2"));
        assert_eq!(parse_timespec_pair("(1, 500)"), Some(1_000_000_500));
    }
}
