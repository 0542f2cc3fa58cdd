//! Writing saved pages into the target: frames are decoded in a worker
//! thread while the calling thread writes the previous ones with
//! process_vm_writev (falling back to /proc/PID/mem where that fails).

use crate::error::{Error, Result, SysContext};
use crate::plan::memory::PageWrite;
use ckpt_image::{ImageReader, MemoryRun, ReadAt};
use ckpt_sys::remote::{write_vm, ProcMem, RemoteRange};
use std::collections::HashMap;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;

static ZEROS: [u8; 64 * 1024] = [0u8; 64 * 1024];

/// Write `data` at `addr` of `pid`.
fn put(pid: i32, mem: &ProcMem, addr: u64, data: &[u8]) -> Result<()> {
    let done = write_vm(
        pid,
        data,
        &[RemoteRange {
            addr,
            len: data.len(),
        }],
    )
    .unwrap_or(0);
    if done < data.len() {
        let a = addr + done as u64;
        mem.write(a, &data[done..])
            .ctx(|| format!("writing saved pages at {a:#x}"))?;
    }
    Ok(())
}

/// Write every planned piece. Returns the number of bytes written.
pub fn write_pages<R: ReadAt + Sync>(
    reader: &ImageReader<R>,
    runs: &[MemoryRun],
    writes: &[PageWrite],
    pid: i32,
    mem: &ProcMem,
) -> Result<u64> {
    // Frames in the order they are first needed, and how often.
    let mut order: Vec<u32> = Vec::new();
    let mut uses: HashMap<u32, usize> = HashMap::new();
    for w in writes.iter().filter(|w| !w.zero) {
        let f = runs[w.run].frame;
        let n = uses.entry(f).or_insert(0);
        if *n == 0 {
            order.push(f);
        }
        *n += 1;
    }
    let mut total = 0u64;
    std::thread::scope(|s| -> Result<()> {
        let (tx, rx) = sync_channel::<std::result::Result<(u32, Arc<Vec<u8>>), Error>>(2);
        let order = &order;
        s.spawn(move || {
            for &f in order {
                let r = reader
                    .read_frame(f)
                    .map(|d| (f, Arc::new(d)))
                    .ctx(|| format!("reading page frame {f} of the image"));
                let stop = r.is_err();
                if tx.send(r).is_err() || stop {
                    return;
                }
            }
        });
        let mut cache: HashMap<u32, Arc<Vec<u8>>> = HashMap::new();
        for w in writes {
            if w.zero {
                let mut a = w.addr;
                let end = w.addr + w.len;
                while a < end {
                    let n = ((end - a) as usize).min(ZEROS.len());
                    put(pid, mem, a, &ZEROS[..n])?;
                    a += n as u64;
                }
                total += w.len;
                continue;
            }
            let run = &runs[w.run];
            let f = run.frame;
            while !cache.contains_key(&f) {
                match rx.recv() {
                    Ok(Ok((i, d))) => {
                        cache.insert(i, d);
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
                        return Err(Error::Stub {
                            pid,
                            what: format!("page frame {f} was never decoded"),
                        })
                    }
                }
            }
            let frame = cache[&f].clone();
            let off = run.frame_offset as u64 + (w.addr - run.start);
            let end = off + w.len;
            if end > frame.len() as u64 {
                return Err(Error::Stub {
                    pid,
                    what: format!(
                        "the image is inconsistent: pages at {:#x} lie past the end of frame {f} ({} bytes)",
                        w.addr,
                        frame.len()
                    ),
                });
            }
            put(pid, mem, w.addr, &frame[off as usize..end as usize])?;
            total += w.len;
            let n = uses.get_mut(&f).expect("counted");
            *n -= 1;
            if *n == 0 {
                cache.remove(&f);
            }
        }
        Ok(())
    })?;
    Ok(total)
}
