//! /proc/PID/fdinfo/N: the generic lines every fd has (pos, flags, mnt_id,
//! ino), parsed strictly, and access to the kind-specific lines that follow
//! them for the kind modules, with errors naming the file and the line.

use crate::error::{Error, Result};
use crate::procfs::{parse_err, token_after};
use ckpt_sys::Pid;

/// One fd's fdinfo.
#[derive(Debug, Clone)]
pub(crate) struct FdInfo {
    pub pos: u64,
    /// Octal "flags:" value, O_CLOEXEC included.
    pub flags: u32,
    pub mnt_id: u64,
    pub ino: u64,
    pub text: String,
    pid: Pid,
    path: String,
}

impl FdInfo {
    pub fn parse(pid: Pid, path: &str, text: String) -> Result<FdInfo> {
        let mut fi = FdInfo {
            pos: 0,
            flags: 0,
            mnt_id: 0,
            ino: 0,
            text: String::new(),
            pid,
            path: path.to_string(),
        };
        let mut seen = [false; 4];
        for (i, l) in text.lines().enumerate() {
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let v = v.trim();
            let slot = match k {
                "pos" => 0,
                "flags" => 1,
                "mnt_id" => 2,
                "ino" => 3,
                _ => continue,
            };
            let bad = || parse_err(pid, path, i + 1, format!("{k}: {v:?} is not a number"));
            match slot {
                0 => fi.pos = v.parse().map_err(|_| bad())?,
                1 => fi.flags = u32::from_str_radix(v, 8).map_err(|_| bad())?,
                2 => fi.mnt_id = v.parse().map_err(|_| bad())?,
                _ => fi.ino = v.parse().map_err(|_| bad())?,
            }
            seen[slot] = true;
            if slot == 3 {
                break; // the generic part ends here; kind-specific lines follow
            }
        }
        for (key, seen) in ["pos", "flags", "mnt_id", "ino"].iter().zip(seen) {
            if !seen {
                return Err(parse_err(pid, path, 0, format!("no \"{key}:\" line")));
            }
        }
        fi.text = text;
        Ok(fi)
    }

    /// An error at `line` (1-based) of this fdinfo file.
    pub fn err(&self, line: usize, what: impl Into<String>) -> Error {
        parse_err(self.pid, &self.path, line, what)
    }

    /// The line number and value of the first "key: value" line.
    pub fn get(&self, key: &str) -> Result<(usize, &str)> {
        self.text
            .lines()
            .enumerate()
            .find_map(|(i, l)| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == key).then(|| (i + 1, v.trim()))
            })
            .ok_or_else(|| self.err(0, format!("no \"{key}:\" line")))
    }

    /// The value of `key` as a number in `radix`.
    pub fn num(&self, key: &str, radix: u32) -> Result<u64> {
        let (n, v) = self.get(key)?;
        u64::from_str_radix(v, radix).map_err(|_| self.bad(n, key, v, radix))
    }

    /// The lines starting with `prefix`, with their numbers.
    pub fn lines_with<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (usize, &'a str)> {
        self.text
            .lines()
            .enumerate()
            .filter(move |(_, l)| l.starts_with(prefix))
            .map(|(i, l)| (i + 1, l))
    }

    /// The value of token `key` in line `line` (number `n`), as a number in `radix`.
    pub fn token(&self, n: usize, line: &str, key: &str, radix: u32) -> Result<u64> {
        let v = token_after(line, key).ok_or_else(|| self.err(n, format!("no {key:?} in it")))?;
        u64::from_str_radix(v, radix).map_err(|_| self.bad(n, key, v, radix))
    }

    fn bad(&self, n: usize, key: &str, v: &str, radix: u32) -> Error {
        let what = match radix {
            16 => "hexadecimal",
            8 => "octal",
            _ => "a number",
        };
        self.err(n, format!("{key}: {v:?} is not {what}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_and_kind_lines() {
        let fi = FdInfo::parse(
            1,
            "/proc/1/fdinfo/5",
            "pos:\t12\nflags:\t02100002\nmnt_id:\t30\nino:\t777\ntfd:        5 events:       19 data:         abc  pos:0 ino:1 sdev:2\n".into(),
        )
        .unwrap();
        assert_eq!(fi.pos, 12);
        assert_eq!(fi.flags, 0o2100002);
        assert_eq!(fi.mnt_id, 30);
        assert_eq!(fi.ino, 777);
        let (n, l) = fi.lines_with("tfd:").next().unwrap();
        assert_eq!(n, 5);
        assert_eq!(fi.token(n, l, "tfd", 10).unwrap(), 5);
        assert_eq!(fi.token(n, l, "events", 16).unwrap(), 0x19);
        assert_eq!(fi.token(n, l, "data", 16).unwrap(), 0xabc);
        assert_eq!(
            fi.token(n, l, "wd", 16).unwrap_err().to_string(),
            "pid 1: cannot parse /proc/1/fdinfo/5 line 5: no \"wd\" in it"
        );
    }

    #[test]
    fn fails_loudly() {
        let e = FdInfo::parse(1, "/proc/1/fdinfo/3", "pos:\tx\nflags:\t0\n".into()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "pid 1: cannot parse /proc/1/fdinfo/3 line 1: pos: \"x\" is not a number"
        );
        let e = FdInfo::parse(
            1,
            "/proc/1/fdinfo/3",
            "pos:\t0\nflags:\t0\nino:\t1\n".into(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "pid 1: cannot parse /proc/1/fdinfo/3: no \"mnt_id:\" line"
        );
        let fi = FdInfo::parse(
            1,
            "/proc/1/fdinfo/3",
            "pos:\t0\nflags:\t0\nmnt_id:\t1\nino:\t1\neventfd-count: zz\n".into(),
        )
        .unwrap();
        assert_eq!(
            fi.num("eventfd-count", 16).unwrap_err().to_string(),
            "pid 1: cannot parse /proc/1/fdinfo/3 line 5: eventfd-count: \"zz\" is not hexadecimal"
        );
    }
}
