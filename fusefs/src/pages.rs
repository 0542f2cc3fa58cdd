//! Writes to `mem` and `map_files/*` between open and close: collected as
//! whole pages (pure), committed as one generation when the file is closed
//! or fsynced.

use crate::store::Failure;
use crate::tree::{find_vma, kernel_provided};
use ckpt_image::{Process, RunKind};
use std::collections::BTreeMap;

/// Pending writes are committed early (one generation) past this many bytes.
pub const FLUSH_BYTES: usize = 64 << 20;

/// The pages written through one open file, not yet committed.
pub struct PendingPages {
    pub pid: i32,
    ps: u64,
    pages: BTreeMap<u64, Vec<u8>>,
    /// Bytes written (as the writer counted them) since the last commit.
    pub written: u64,
    /// How many write() calls.
    pub writes: u64,
    /// Lowest address written.
    pub first: Option<u64>,
}

impl PendingPages {
    pub fn new(pid: i32, page_size: u32) -> PendingPages {
        PendingPages {
            pid,
            ps: u64::from(page_size.max(1)),
            pages: BTreeMap::new(),
            written: 0,
            writes: 0,
            first: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// Bytes held (whole pages).
    pub fn bytes(&self) -> usize {
        self.pages.len() * self.ps as usize
    }

    /// Copy the pending bytes over `out`, read at `addr`.
    pub fn overlay(&self, addr: u64, out: &mut [u8]) {
        let end = addr + out.len() as u64;
        let from = addr - addr % self.ps;
        for (&pa, page) in self.pages.range(from..end) {
            let s = pa.max(addr);
            let e = (pa + self.ps).min(end);
            out[(s - addr) as usize..(e - addr) as usize]
                .copy_from_slice(&page[(s - pa) as usize..(e - pa) as usize]);
        }
    }

    /// Add `data` at `addr`. A page written only in part is first filled
    /// with its current contents by `fetch(page_address, page)`.
    pub fn write(
        &mut self,
        addr: u64,
        data: &[u8],
        mut fetch: impl FnMut(u64, &mut [u8]) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let end = addr + data.len() as u64;
        let mut pa = addr - addr % self.ps;
        // Fetch first, so that a failure changes nothing.
        let mut fresh = Vec::new();
        while pa < end {
            let whole = pa >= addr && pa + self.ps <= end;
            if !whole && !self.pages.contains_key(&pa) {
                let mut page = vec![0u8; self.ps as usize];
                fetch(pa, &mut page)?;
                fresh.push((pa, page));
            }
            pa += self.ps;
        }
        self.pages.extend(fresh);
        let mut pa = addr - addr % self.ps;
        while pa < end {
            let page = self
                .pages
                .entry(pa)
                .or_insert_with(|| vec![0u8; self.ps as usize]);
            let s = pa.max(addr);
            let e = (pa + self.ps).min(end);
            page[(s - pa) as usize..(e - pa) as usize]
                .copy_from_slice(&data[(s - addr) as usize..(e - addr) as usize]);
            pa += self.ps;
        }
        self.written += data.len() as u64;
        self.writes += 1;
        self.first = Some(self.first.map_or(addr, |f| f.min(addr)));
        Ok(())
    }

    /// Take the pending pages as contiguous (address, bytes) ranges.
    pub fn take(&mut self) -> Vec<(u64, Vec<u8>)> {
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        for (pa, page) in std::mem::take(&mut self.pages) {
            match out.last_mut() {
                Some((a, d)) if *a + d.len() as u64 == pa => d.extend_from_slice(&page),
                _ => out.push((pa, page)),
            }
        }
        self.written = 0;
        self.writes = 0;
        self.first = None;
        out
    }
}

/// How many bytes of a write of `len` at `addr` can go into the image:
/// the part in consecutive mappings an image can hold, before any guard
/// page (`page_size` is the image's). An error, with the reason, when not
/// even the first byte can.
pub fn writable_prefix(p: &Process, addr: u64, len: u64, page_size: u64) -> Result<u64, Failure> {
    let pid = p.pid;
    let mut end = addr.saturating_add(len);
    // Guard pages (MADV_GUARD_INSTALL) hold no bytes.
    let i = p
        .memory
        .partition_point(|m| m.start + u64::from(m.pages) * page_size <= addr);
    if let Some(g) = p.memory[i..]
        .iter()
        .take_while(|m| m.start < end)
        .find(|m| m.kind == RunKind::Guard)
    {
        if g.start <= addr {
            return Err(Failure::new(
                libc::EIO,
                format!(
                    "pid {pid}: {addr:#x} is a guard page (MADV_GUARD_INSTALL): it holds no bytes"
                ),
            ));
        }
        end = g.start;
    }
    let mut cur = addr;
    while cur < end {
        let Some(v) = find_vma(&p.vmas, cur) else {
            break;
        };
        if kernel_provided(v) {
            if cur == addr {
                return Err(Failure::new(
                    libc::EIO,
                    format!(
                        "pid {pid}: {addr:#x} is in {} ({:#x}-{:#x}), which the kernel provides at restore: it cannot be written into an image",
                        String::from_utf8_lossy(&v.name),
                        v.start,
                        v.end
                    ),
                ));
            }
            break;
        }
        cur = v.end.min(end);
    }
    if cur == addr {
        return Err(Failure::new(
            libc::EIO,
            format!("pid {pid}: address {addr:#x} is not mapped"),
        ));
    }
    Ok(cur - addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ckpt_image::{SpecialMapping, Vma, VmaBacking};

    #[test]
    fn partial_pages_are_fetched_once() {
        let mut p = PendingPages::new(1, 4096);
        let mut fetched = Vec::new();
        p.write(0x1000 + 10, b"abc", |pa, page| {
            fetched.push(pa);
            page.fill(7);
            Ok(())
        })
        .unwrap();
        p.write(0x1000 + 4090, &[1u8; 10], |pa, page| {
            fetched.push(pa);
            page.fill(8);
            Ok(())
        })
        .unwrap();
        assert_eq!(fetched, vec![0x1000, 0x2000]);
        let mut out = vec![0u8; 20];
        p.overlay(0x1000 + 5, &mut out);
        assert_eq!(&out[..5], &[7; 5]);
        assert_eq!(&out[5..8], b"abc");
        let r = p.take();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0, 0x1000);
        assert_eq!(r[0].1.len(), 8192);
        assert_eq!(r[0].1[4096 + 3], 1);
        assert_eq!(r[0].1[4096 + 4], 8);
        assert!(p.is_empty());
        // A failing fetch changes nothing.
        let e = p.write(0x5000 + 1, b"x", |_, _| Err(Failure::new(5, "no")));
        assert!(e.is_err() && p.is_empty());
        // Whole pages need no fetch.
        p.write(0x3000, &[9u8; 8192], |_, _| panic!("no fetch"))
            .unwrap();
        assert_eq!(p.bytes(), 8192);
    }

    #[test]
    fn what_can_be_written() {
        let v = |s: u64, e: u64, b: VmaBacking| Vma {
            start: s,
            end: e,
            backing: b,
            name: b"[vvar]".to_vec(),
            ..Default::default()
        };
        let p = Process {
            pid: 9,
            vmas: vec![
                v(0x1000, 0x3000, VmaBacking::Anonymous),
                v(0x3000, 0x4000, VmaBacking::Anonymous),
                v(0x4000, 0x5000, VmaBacking::Special(SpecialMapping::Vvar)),
            ],
            ..Default::default()
        };
        assert_eq!(writable_prefix(&p, 0x1000, 0x10, 4096).unwrap(), 0x10);
        assert_eq!(writable_prefix(&p, 0x2ff0, 0x2000, 4096).unwrap(), 0x1010);
        let e = writable_prefix(&p, 0x4000, 1, 4096).unwrap_err();
        assert!(
            e.msg.contains("[vvar]") && e.msg.contains("kernel provides"),
            "{}",
            e.msg
        );
        assert!(!e.msg.contains("backed by a file"));
        let e = writable_prefix(&p, 0x9000, 1, 4096).unwrap_err();
        assert!(e.msg.contains("not mapped"), "{}", e.msg);
        // A guard page stops a write, or refuses it.
        let mut p = p;
        p.memory.push(ckpt_image::MemoryRun {
            start: 0x2000,
            pages: 1,
            kind: RunKind::Guard,
            ..Default::default()
        });
        assert_eq!(writable_prefix(&p, 0x1800, 0x2000, 4096).unwrap(), 0x800);
        let e = writable_prefix(&p, 0x2010, 1, 4096).unwrap_err();
        assert!(e.msg.contains("guard page"), "{}", e.msg);
    }
}
