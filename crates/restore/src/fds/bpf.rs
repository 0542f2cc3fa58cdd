//! BPF maps: made again by the restorer (a new map, with a new map id) with
//! the saved definition and entries, frozen again if it was, and inherited
//! by the stub like the sockets it builds (sockets.rs).

use super::sockets::Prebuilt;
use super::Builder;
use crate::Report;
use ckpt_image::{BpfMap, Credentials};
use ckpt_sys::bpf::{self, MapDef};
use std::os::fd::{AsFd, OwnedFd};

/// One map for the restorer to make.
#[derive(Debug, Clone, PartialEq)]
pub struct BpfSpec {
    pub def: MapDef,
    pub frozen: bool,
    pub keys: Vec<u8>,
    pub values: Vec<u8>,
}

pub(super) fn plan(b: &mut Builder, g: usize, m: &BpfMap) {
    let what = b.what(g);
    let (ks, vs) = (m.key_size as usize, m.value_size as usize);
    let n = m.keys.len().checked_div(ks).unwrap_or(0);
    if !bpf::READABLE_TYPES.contains(&m.map_type) {
        b.error(format!(
            "{what}: a BPF map of type {} cannot be restored (hash, array and LRU hash maps can)",
            m.map_type
        ));
        return;
    }
    if ks == 0 || vs == 0 || m.keys.len() != n * ks || m.values.len() != n * vs {
        b.error(format!(
            "{what}: the BPF map's saved entries ({} bytes of keys, {} of values) do not fit its key size {} and value size {}",
            m.keys.len(),
            m.values.len(),
            m.key_size,
            m.value_size
        ));
        return;
    }
    if n > m.max_entries as usize {
        b.error(format!(
            "{what}: the BPF map has {n} saved entries, more than its {} max entries",
            m.max_entries
        ));
        return;
    }
    b.prebuilt(
        g,
        Prebuilt::BpfMap(BpfSpec {
            def: MapDef {
                map_type: m.map_type,
                key_size: m.key_size,
                value_size: m.value_size,
                max_entries: m.max_entries,
                map_flags: m.map_flags,
                name: m.name.clone(),
                // With BPF_F_NUMA_NODE: the kernel does not tell which
                // node the map was made on; node 0 is always there.
                numa_node: 0,
                map_extra: m.map_extra,
            },
            frozen: m.frozen,
            keys: m.keys.clone(),
            values: m.values.clone(),
        }),
    );
}

/// Whether the saved user could have made the map: CAP_BPF or
/// CAP_SYS_ADMIN, when the restore is for another user.
pub(super) fn check(what: &str, c: &Credentials, other_user: bool, r: &mut Report) {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    if other_user && c.cap_effective & (1 << CAP_BPF | 1 << CAP_SYS_ADMIN) == 0 {
        r.errors.push(format!(
            "{what}: a BPF map needs CAP_BPF or CAP_SYS_ADMIN, which uid {} did not have",
            c.euid
        ));
    }
}

/// Make the map and fill it. A map made read-only for system calls holds
/// nothing written by them (the dump refused one with entries), so it is
/// left as made.
pub(super) fn make(s: &BpfSpec) -> Result<OwnedFd, String> {
    let fd = bpf::map_create(&s.def).map_err(|e| e.to_string())?;
    if s.def.map_flags & bpf::F_RDONLY == 0 {
        bpf::map_fill(fd.as_fd(), &s.def, &s.keys, &s.values)
            .map_err(|e| format!("writing its entries back: {e}"))?;
    }
    if s.frozen {
        bpf::map_freeze(fd.as_fd()).map_err(|e| e.to_string())?;
    }
    Ok(fd)
}
