//! BPF maps: the definition (BPF_OBJ_GET_INFO_BY_FD), whether it is
//! frozen (fdinfo) and every entry, read through a copy of the process's
//! fd. Hash, array and LRU hash maps; others are refused by name.

use super::{fd_sys, unsupported, Ctx, RawFd};
use crate::error::Result;
use ckpt_image::{BpfMap, FileKind};
use ckpt_sys::bpf;
use std::os::fd::AsFd;

pub(super) fn matches(f: &RawFd) -> bool {
    f.link == b"anon_inode:bpf-map"
}

/// A name for a map type in messages.
fn type_name(t: u32) -> String {
    let name = match t {
        3 => "prog array",
        4 => "perf event array",
        5 => "per-CPU hash",
        6 => "per-CPU array",
        7 => "stack trace",
        8 => "cgroup array",
        10 => "LRU per-CPU hash",
        11 => "LPM trie",
        12 => "array of maps",
        13 => "hash of maps",
        16 => "sockmap",
        22 => "queue",
        23 => "stack",
        27 => "ring buffer",
        _ => "",
    };
    if name.is_empty() {
        format!("type {t}")
    } else {
        format!("type {t} ({name})")
    }
}

pub(super) fn save(cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    let fd = ckpt_sys::proc::pidfd::fd_of(cx.pid, f.fd)
        .map_err(fd_sys(f.fd, "taking a copy of the BPF map's fd"))?;
    let info = bpf::map_info(fd.as_fd()).map_err(fd_sys(f.fd, "asking what the BPF map is"))?;
    let what = |why: String| {
        unsupported(
            f.fd,
            format!(
                "BPF map {:?} ({}) cannot be saved: {why}",
                String::from_utf8_lossy(&info.name),
                type_name(info.map_type)
            ),
        )
    };
    if !bpf::READABLE_TYPES.contains(&info.map_type) {
        return Err(what("only hash, array and LRU hash maps are saved".into()));
    }
    if info.btf_id != 0 || info.btf_vmlinux_value_type_id != 0 {
        return Err(what(
            "it has BTF type information, which is not saved".into(),
        ));
    }
    if info.ifindex != 0 {
        return Err(what(format!(
            "it is offloaded to network device {}",
            info.ifindex
        )));
    }
    let frozen = match f.info.get("frozen") {
        Ok((_, v)) => v.trim() == "1",
        Err(_) => false,
    };
    let (keys, values) =
        bpf::map_entries(fd.as_fd()).map_err(fd_sys(f.fd, "reading the BPF map's entries"))?;
    // Made read-only for system calls, it cannot be filled again (an array
    // of zeros is what a new one holds anyway).
    let empty = match info.map_type {
        bpf::MAP_TYPE_ARRAY => values.iter().all(|&b| b == 0),
        _ => keys.is_empty(),
    };
    if info.map_flags & bpf::F_RDONLY != 0 && !empty {
        return Err(what(
            "it was created read-only for system calls (BPF_F_RDONLY), so its entries could not be written again".into(),
        ));
    }
    Ok(Some(FileKind::BpfMap(BpfMap {
        map_type: info.map_type,
        key_size: info.key_size,
        value_size: info.value_size,
        max_entries: info.max_entries,
        map_flags: info.map_flags,
        name: info.name,
        frozen,
        map_extra: info.map_extra,
        keys,
        values,
    })))
}
