//! Helpers of the capture tests that are about ckpt-capture: page sinks
//! that keep captured pages in memory or drop them. What any test needs
//! (temp dirs, processes and their waits, C compilation, the skip policy)
//! is in ckpt-testkit, re-exported here.
#![allow(dead_code)]

use ckpt_capture::{PageSink, Result};
use ckpt_image::Blob;
pub use ckpt_testkit::*;
use std::collections::BTreeMap;

/// Pages and blobs kept in memory.
#[derive(Default)]
pub struct MemSink {
    pub pages: BTreeMap<u64, Vec<u8>>,
    pub blobs: Vec<Vec<u8>>,
    /// Guard regions: (address, length).
    pub guards: Vec<(u64, u64)>,
    pub calls: usize,
    pub last_addr: Option<u64>,
}

impl MemSink {
    /// Bytes at `addr` if saved.
    pub fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        let (&start, data) = self.pages.range(..=addr).next_back()?;
        let off = (addr - start) as usize;
        data.get(off..off + len).map(<[u8]>::to_vec)
    }
    pub fn blob(&self, b: &Blob) -> Vec<u8> {
        let mut v = self.blobs[b.frames[0] as usize].clone();
        v.truncate(b.size as usize);
        v
    }
    pub fn total(&self) -> u64 {
        self.pages.values().map(|v| v.len() as u64).sum()
    }
}

impl PageSink for MemSink {
    fn add_pages(&mut self, _pid: i32, addr: u64, data: &[u8]) -> Result<()> {
        assert_eq!(addr % 4096, 0);
        assert_eq!(data.len() % 4096, 0);
        if let Some(l) = self.last_addr {
            assert!(addr >= l, "pages out of order: {addr:#x} after {l:#x}");
        }
        self.last_addr = Some(addr + data.len() as u64);
        self.calls += 1;
        self.pages.insert(addr, data.to_vec());
        Ok(())
    }
    fn add_blob(&mut self, data: &[u8]) -> Result<Blob> {
        self.blobs.push(data.to_vec());
        Ok(Blob {
            size: data.len() as u64,
            frames: vec![self.blobs.len() as u32 - 1],
        })
    }
    fn add_guard(&mut self, _pid: i32, addr: u64, len: u64) -> Result<()> {
        self.guards.push((addr, len));
        Ok(())
    }
}

/// A sink that drops everything (for timing).
#[derive(Default)]
pub struct NullSink {
    pub bytes: u64,
}

impl PageSink for NullSink {
    fn add_pages(&mut self, _pid: i32, _addr: u64, data: &[u8]) -> Result<()> {
        self.bytes += data.len() as u64;
        Ok(())
    }
    fn add_blob(&mut self, data: &[u8]) -> Result<Blob> {
        Ok(Blob {
            size: data.len() as u64,
            frames: vec![],
        })
    }
    fn add_guard(&mut self, _pid: i32, _addr: u64, _len: u64) -> Result<()> {
        Ok(())
    }
}
