//! cgroup hierarchies as this process sees them: which are mounted where
//! (/proc/self/mountinfo) and the membership lines of /proc/PID/cgroup.
//! Plain reads and parsing; shared by capture and restore.

use std::collections::BTreeSet;
use std::path::PathBuf;

/// One mount of a cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// The hierarchy as /proc/PID/cgroup names it ("cpu,cpuacct",
    /// "name=zdtmtst"; "" for cgroup v2), controllers in the kernel's order.
    pub hierarchy: String,
    /// The cgroup mounted there (mountinfo's root field; "/" for the
    /// whole hierarchy).
    pub root: Vec<u8>,
    pub mount_point: PathBuf,
}

/// The lines of a /proc/PID/cgroup file: (hierarchy, path), the
/// hierarchy being the controllers field ("" for cgroup v2).
pub fn parse_cgroup_file(raw: &[u8]) -> Vec<(String, Vec<u8>)> {
    raw.split(|&c| c == b'\n')
        .filter_map(|l| {
            let mut parts = l.splitn(3, |&c| c == b':');
            let (_id, ctl, path) = (parts.next()?, parts.next()?, parts.next()?);
            Some((String::from_utf8_lossy(ctl).into_owned(), path.to_vec()))
        })
        .collect()
}

/// The controller names the kernel has (/proc/cgroups).
fn controllers() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/cgroups")
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// mountinfo's octal escapes (\040 for a space, ...).
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Every cgroup mount of this process's mount namespace, in mountinfo order.
pub fn cgroup_mounts() -> Vec<CgroupMount> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    parse_mountinfo(&text, &controllers())
}

/// The cgroup mounts of a mountinfo text; `known` the kernel's controllers.
pub fn parse_mountinfo(text: &str, known: &BTreeSet<String>) -> Vec<CgroupMount> {
    use std::os::unix::ffi::OsStringExt;
    let mut out = Vec::new();
    for l in text.lines() {
        let Some((left, right)) = l.split_once(" - ") else {
            continue;
        };
        let mut r = right.split_whitespace();
        let (Some(fstype), _, Some(opts)) = (r.next(), r.next(), r.next()) else {
            continue;
        };
        let f: Vec<&str> = left.split_whitespace().collect();
        if f.len() < 5 {
            continue;
        }
        let hierarchy = match fstype {
            "cgroup2" => String::new(),
            "cgroup" => opts
                .split(',')
                .filter(|o| o.starts_with("name=") || known.contains(*o))
                .collect::<Vec<_>>()
                .join(","),
            _ => continue,
        };
        out.push(CgroupMount {
            hierarchy,
            root: unescape(f[3]),
            mount_point: PathBuf::from(std::ffi::OsString::from_vec(unescape(f[4]))),
        });
    }
    out
}

/// Whether two hierarchy names are the same hierarchy (the same set of
/// controllers and name=, whatever the order).
pub fn same_hierarchy(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    // Each item of one among the other's (a handful each: no sets made).
    let within = |x: &str, y: &str| {
        x.split(',')
            .filter(|i| !i.is_empty())
            .all(|i| y.split(',').any(|j| j == i))
    };
    within(a, b) && within(b, a)
}

/// Where cgroup `path` of `hierarchy` is in our mounts: the mount whose
/// root holds it (the whole hierarchy's mount first).
pub fn find_dir(mounts: &[CgroupMount], hierarchy: &str, path: &[u8]) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let mut best: Option<(usize, PathBuf)> = None;
    for m in mounts
        .iter()
        .filter(|m| same_hierarchy(&m.hierarchy, hierarchy))
    {
        let root = m.root.strip_suffix(b"/").unwrap_or(&m.root);
        let Some(rest) = path.strip_prefix(root) else {
            continue;
        };
        if !(rest.is_empty() || rest.starts_with(b"/")) {
            continue;
        }
        let rest = std::ffi::OsStr::from_bytes(rest.strip_prefix(b"/").unwrap_or(rest));
        let dir = if rest.is_empty() {
            m.mount_point.clone()
        } else {
            m.mount_point.join(rest)
        };
        if best.as_ref().is_none_or(|(len, _)| root.len() < *len) {
            best = Some((root.len(), dir));
        }
    }
    best.map(|(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hierarchies_are_sets_of_names() {
        assert!(same_hierarchy("cpu,cpuacct", "cpuacct,cpu"));
        assert!(same_hierarchy("name=a", "name=a,"));
        assert!(same_hierarchy("", ""));
        assert!(!same_hierarchy("cpu", "cpuacct"));
        assert!(!same_hierarchy("cpu,cpuacct", "cpu"));
        assert!(!same_hierarchy("", "cpu"));
    }

    #[test]
    fn mounts_and_dirs() {
        let known: BTreeSet<String> = ["cpu", "cpuacct", "memory"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let text = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
            40 31 0:37 / /t/a\\040b rw - cgroup none rw,name=zdtmtst,xattr\n\
            41 31 0:38 /sub /t/sub rw - cgroup none rw,name=zdtmtst\n\
            42 31 0:39 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
            43 31 0:40 / /tmp rw - tmpfs tmpfs rw\n";
        let m = parse_mountinfo(text, &known);
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].hierarchy, "cpu,cpuacct");
        assert_eq!(m[1].hierarchy, "name=zdtmtst");
        assert_eq!(m[1].mount_point, PathBuf::from("/t/a b"));
        assert_eq!(m[3].hierarchy, "");
        assert_eq!(
            find_dir(&m, "name=zdtmtst", b"/sub/x"),
            Some(PathBuf::from("/t/a b/sub/x"))
        );
        assert_eq!(
            find_dir(&m, "cpuacct,cpu", b"/"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(find_dir(&m, "memory", b"/"), None);
        assert_eq!(
            parse_cgroup_file(b"10:name=zdtmtst:/a\n0::/\n"),
            vec![
                ("name=zdtmtst".into(), b"/a".to_vec()),
                (String::new(), b"/".to_vec())
            ]
        );
    }
}
