//! Namespace files (an open /proc/PID/ns/KIND): only those of the
//! process's own namespaces, which a restore reopens from the restored
//! process. One of another namespace is refused.

use super::{unsupported, Ctx, RawFd};
use crate::error::Result;
use ckpt_image::{FileKind, NsFile};
use std::os::unix::fs::MetadataExt;

/// The entries of /proc/PID/ns, the ones a process is in first.
const KINDS: [&str; 10] = [
    "net",
    "mnt",
    "pid",
    "uts",
    "ipc",
    "user",
    "cgroup",
    "time",
    "pid_for_children",
    "time_for_children",
];

/// `net:[4026531833]` -> ("net", 4026531833).
fn parse(link: &[u8]) -> Option<(&str, u64)> {
    let s = std::str::from_utf8(link).ok()?;
    let (kind, rest) = s.split_once(":[")?;
    let ino = rest.strip_suffix(']')?.parse().ok()?;
    KINDS.contains(&kind).then_some((kind, ino))
}

pub(super) fn matches(f: &RawFd) -> bool {
    parse(&f.link).is_some()
}

pub(super) fn save(cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    let Some((shown, inode)) = parse(&f.link) else {
        return Ok(None);
    };
    let own = KINDS.iter().find(|k| {
        std::fs::metadata(format!("/proc/{}/ns/{k}", cx.pid)).is_ok_and(|m| m.ino() == inode)
    });
    let Some(kind) = own else {
        return Err(unsupported(
            f.fd,
            format!(
                "{}: a namespace the process is not in; only its own namespaces can be saved",
                String::from_utf8_lossy(&f.link)
            ),
        ));
    };
    tracing::debug!(fd = f.fd, shown, kind, "namespace file");
    Ok(Some(FileKind::Nsfs(NsFile {
        kind: (*kind).to_string(),
        inode,
        pid: cx.pid,
    })))
}
