//! BPF maps through bpf(2) (by hand: nix lacks it): what a map is
//! (BPF_OBJ_GET_INFO_BY_FD), its entries (BPF_MAP_GET_NEXT_KEY,
//! BPF_MAP_LOOKUP_ELEM), and making one again (BPF_MAP_CREATE,
//! BPF_MAP_UPDATE_ELEM, BPF_MAP_FREEZE).
//!
//! `union bpf_attr` and `struct bpf_map_info` are built and read as byte
//! arrays at the offsets of linux/bpf.h, so no layout is assumed beyond
//! what the kernel's UAPI fixes.

use crate::{last_os, Result};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_MAP_FREEZE: libc::c_long = 22;

/// Size of the attr buffer given to the kernel (larger than any command
/// here uses; the rest is zero, which the kernel requires).
const ATTR: usize = 128;
/// Size of `struct bpf_map_info` asked for (up to map_extra).
const INFO: usize = 88;

/// What BPF_OBJ_GET_INFO_BY_FD says of a map (the fields ckpt uses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapInfo {
    pub map_type: u32,
    pub id: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    /// Up to 15 bytes.
    pub name: Vec<u8>,
    pub ifindex: u32,
    pub btf_vmlinux_value_type_id: u32,
    pub btf_id: u32,
    pub btf_key_type_id: u32,
    pub btf_value_type_id: u32,
    pub map_extra: u64,
}

/// A map to make: its definition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapDef {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub name: Vec<u8>,
    pub numa_node: u32,
    pub map_extra: u64,
}

fn put32(a: &mut [u8; ATTR], at: usize, v: u32) {
    a[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put64(a: &mut [u8; ATTR], at: usize, v: u64) {
    a[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn get64(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// bpf(cmd, attr, ATTR): its result, or the error of `op`.
fn bpf(cmd: libc::c_long, attr: &mut [u8; ATTR], op: &'static str) -> Result<libc::c_long> {
    // SAFETY: `attr` is a live, writable buffer of ATTR bytes for the whole
    // call, and every pointer the callers of this module store in it points
    // to a live buffer of the size the command reads or writes: the info
    // buffer with its length, or keys and values of the map's own key_size
    // and value_size (from its info when reading, checked against the
    // slices in map_fill when writing).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr() as *mut libc::c_void,
            ATTR as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(last_os(op, 0));
    }
    Ok(r)
}

/// BPF_OBJ_GET_INFO_BY_FD of a map.
pub fn map_info(fd: BorrowedFd<'_>) -> Result<MapInfo> {
    let mut info = [0u8; INFO];
    let mut a = [0u8; ATTR];
    put32(&mut a, 0, fd.as_raw_fd() as u32);
    put32(&mut a, 4, INFO as u32);
    put64(&mut a, 8, info.as_mut_ptr() as u64);
    bpf(
        BPF_OBJ_GET_INFO_BY_FD,
        &mut a,
        "bpf(BPF_OBJ_GET_INFO_BY_FD)",
    )?;
    let name = &info[24..40];
    let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
    Ok(MapInfo {
        map_type: get32(&info, 0),
        id: get32(&info, 4),
        key_size: get32(&info, 8),
        value_size: get32(&info, 12),
        max_entries: get32(&info, 16),
        map_flags: get32(&info, 20),
        name: name.to_vec(),
        ifindex: get32(&info, 40),
        btf_vmlinux_value_type_id: get32(&info, 44),
        btf_id: get32(&info, 64),
        btf_key_type_id: get32(&info, 68),
        btf_value_type_id: get32(&info, 72),
        map_extra: get64(&info, 80),
    })
}

/// Map types whose entries [`map_entries`] reads: their lookups give one
/// value of value_size bytes (per-CPU maps give one per CPU).
pub const READABLE_TYPES: [u32; 3] = [MAP_TYPE_HASH, MAP_TYPE_ARRAY, MAP_TYPE_LRU_HASH];
pub const MAP_TYPE_HASH: u32 = 1;
pub const MAP_TYPE_ARRAY: u32 = 2;
pub const MAP_TYPE_LRU_HASH: u32 = 9;
/// Map flag BPF_F_RDONLY: system calls cannot change the entries.
pub const F_RDONLY: u32 = 1 << 3;

/// Every entry of the map `fd`, as (keys, values) laid end to end, in the
/// map's iteration order. Entries deleted while iterating are skipped.
/// Only the [`READABLE_TYPES`] (EINVAL otherwise). The sizes are the
/// map's own (asked here), so the kernel never writes past the buffers.
pub fn map_entries(fd: BorrowedFd<'_>) -> Result<(Vec<u8>, Vec<u8>)> {
    let info = map_info(fd)?;
    let (ks, vs) = (info.key_size as usize, info.value_size as usize);
    if !READABLE_TYPES.contains(&info.map_type) || ks == 0 || vs == 0 {
        return Err(crate::os_errno("reading a BPF map", 0, libc::EINVAL));
    }
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    let mut cur: Option<Vec<u8>> = None;
    let mut next = vec![0u8; ks];
    let mut value = vec![0u8; vs];
    loop {
        let mut a = [0u8; ATTR];
        put32(&mut a, 0, fd.as_raw_fd() as u32);
        put64(&mut a, 8, cur.as_ref().map_or(0, |k| k.as_ptr() as u64));
        put64(&mut a, 16, next.as_mut_ptr() as u64);
        match bpf(BPF_MAP_GET_NEXT_KEY, &mut a, "bpf(BPF_MAP_GET_NEXT_KEY)") {
            Ok(_) => {}
            Err(e) if e.errno() == Some(libc::ENOENT) => break,
            Err(e) => return Err(e),
        }
        let mut a = [0u8; ATTR];
        put32(&mut a, 0, fd.as_raw_fd() as u32);
        put64(&mut a, 8, next.as_ptr() as u64);
        put64(&mut a, 16, value.as_mut_ptr() as u64);
        match bpf(BPF_MAP_LOOKUP_ELEM, &mut a, "bpf(BPF_MAP_LOOKUP_ELEM)") {
            Ok(_) => {
                keys.extend_from_slice(&next);
                values.extend_from_slice(&value);
            }
            Err(e) if e.errno() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        cur = Some(next.clone());
    }
    Ok((keys, values))
}

/// BPF_MAP_CREATE.
pub fn map_create(d: &MapDef) -> Result<OwnedFd> {
    let mut a = [0u8; ATTR];
    put32(&mut a, 0, d.map_type);
    put32(&mut a, 4, d.key_size);
    put32(&mut a, 8, d.value_size);
    put32(&mut a, 12, d.max_entries);
    put32(&mut a, 16, d.map_flags);
    put32(&mut a, 24, d.numa_node);
    let n = d.name.len().min(15);
    a[28..28 + n].copy_from_slice(&d.name[..n]);
    put64(&mut a, 64, d.map_extra);
    let fd = bpf(BPF_MAP_CREATE, &mut a, "bpf(BPF_MAP_CREATE)")?;
    // SAFETY: the kernel just returned this new descriptor; nothing else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Put `keys` and `values` (laid end to end, `d.key_size` and
/// `d.value_size` bytes each, as [`map_entries`] gives them) into the map
/// (BPF_MAP_UPDATE_ELEM with BPF_ANY, one by one).
pub fn map_fill(fd: BorrowedFd<'_>, d: &MapDef, keys: &[u8], values: &[u8]) -> Result<()> {
    const OP: &str = "bpf(BPF_MAP_UPDATE_ELEM)";
    let (ks, vs) = (d.key_size as usize, d.value_size as usize);
    let n = keys.len().checked_div(ks).unwrap_or(0);
    if ks == 0 || vs == 0 || keys.len() != n * ks || values.len() != n * vs {
        return Err(crate::os_errno(OP, 0, libc::EINVAL));
    }
    for i in 0..n {
        let (key, value) = (&keys[i * ks..(i + 1) * ks], &values[i * vs..(i + 1) * vs]);
        let mut a = [0u8; ATTR];
        put32(&mut a, 0, fd.as_raw_fd() as u32);
        put64(&mut a, 8, key.as_ptr() as u64);
        put64(&mut a, 16, value.as_ptr() as u64);
        bpf(BPF_MAP_UPDATE_ELEM, &mut a, OP)?;
    }
    Ok(())
}

/// BPF_MAP_FREEZE: no more changes from system calls.
pub fn map_freeze(fd: BorrowedFd<'_>) -> Result<()> {
    let mut a = [0u8; ATTR];
    put32(&mut a, 0, fd.as_raw_fd() as u32);
    bpf(BPF_MAP_FREEZE, &mut a, "bpf(BPF_MAP_FREEZE)")?;
    Ok(())
}
