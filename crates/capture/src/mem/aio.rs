//! AIO rings (io_setup): the header of a context's ring, read from the
//! process, for the restore to make a new context whose ring matches it.
//! The ring's pages (its completed events) are saved whole like any
//! memory's. Requests still in flight cannot be seen from outside the
//! kernel: they are not saved (their completions never come).

use super::vmas::MapEntry;
use ckpt_image::AioRing;
use ckpt_sys::mm::ProcMem;
use ckpt_sys::Pid;

/// The kernel's ring header (struct aio_ring): 8 u32 fields.
pub(crate) const HEADER_LEN: u64 = 32;
/// One completion (struct io_event): 4 u64 fields.
pub(crate) const EVENT_LEN: u64 = 32;
const MAGIC: u32 = 0xa10a_10a1;

/// The header of the ring mapped by `e`; Err: why it cannot be saved.
pub(crate) fn ring(pid: Pid, e: &MapEntry) -> Result<AioRing, String> {
    let mem = ProcMem::open(pid).map_err(|err| format!("reading the AIO ring: {err}"))?;
    let mut raw = [0u8; HEADER_LEN as usize];
    mem.read(e.start, &mut raw)
        .map_err(|err| format!("reading the AIO ring's header: {err}"))?;
    parse(&raw, e.end - e.start)
}

/// Check and take the header `raw` of a ring of `len` bytes.
fn parse(raw: &[u8; HEADER_LEN as usize], len: u64) -> Result<AioRing, String> {
    let word = |i: usize| u32::from_ne_bytes(raw[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
    let (nr, head, tail, magic, header_len) = (word(1), word(2), word(3), word(4), word(7));
    let slots = len.saturating_sub(HEADER_LEN) / EVENT_LEN;
    if magic != MAGIC || u64::from(header_len) != HEADER_LEN {
        return Err(format!(
            "an AIO ring whose header is not the kernel's (magic {magic:#x}, header length {header_len})"
        ));
    }
    if u64::from(nr) != slots || head >= nr || tail >= nr {
        return Err(format!(
            "an AIO ring of {len} bytes whose header says nr {nr}, head {head}, tail {tail}"
        ));
    }
    Ok(AioRing { nr, head, tail })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(nr: u32, head: u32, tail: u32, magic: u32) -> [u8; 32] {
        let mut raw = [0u8; 32];
        for (i, w) in [0, nr, head, tail, magic, 1, 0, 32].iter().enumerate() {
            raw[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        raw
    }

    #[test]
    fn ring_headers() {
        let r = parse(&header(127, 3, 5, MAGIC), 4096).unwrap();
        assert_eq!(
            r,
            AioRing {
                nr: 127,
                head: 3,
                tail: 5
            }
        );
        assert!(parse(&header(127, 3, 5, 0), 4096)
            .unwrap_err()
            .contains("magic"));
        assert!(parse(&header(128, 0, 0, MAGIC), 4096).is_err());
        assert!(parse(&header(127, 127, 0, MAGIC), 4096).is_err());
    }
}
