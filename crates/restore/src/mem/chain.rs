//! The pages of an incremental image: its `parent` runs resolved through
//! the chain of parent images (ckpt-image finds and checks the chain), and
//! the pages written from the frames of the image that holds each run.

use super::pages::{write_pages, PageWrite, Target};
use crate::error::{Error, Result};
use ckpt_image::{ImageReader, MemoryRun, Process, ReadAt};

/// The runs of a process to restore, each with the level of the image in
/// the chain whose frames hold it (0: the image itself).
pub(crate) struct Runs {
    pub memory: Vec<MemoryRun>,
    pub levels: Vec<usize>,
}

impl Runs {
    /// The runs of `p` (of `reader`'s image): as saved, or resolved through
    /// the chain for an incremental image.
    pub fn of<R: ReadAt>(reader: &ImageReader<R>, p: &Process) -> Result<Runs> {
        if reader.image().parent.image_id.is_empty() {
            return Ok(Runs {
                memory: p.memory.clone(),
                levels: vec![0; p.memory.len()],
            });
        }
        let resolved = reader.resolved_memory(p.pid).map_err(|e| Error::Stub {
            pid: p.pid,
            what: format!("the pages of this incremental image: {e}"),
        })?;
        tracing::debug!(
            levels = reader.ancestors().len() + 1,
            runs = resolved.len(),
            "runs resolved through the chain of parent images"
        );
        Ok(Runs {
            memory: resolved.iter().map(|r| r.run).collect(),
            levels: resolved.iter().map(|r| r.level).collect(),
        })
    }

    /// Whether every run is in the image itself.
    pub fn single(&self) -> bool {
        self.levels.iter().all(|&l| l == 0)
    }

    /// `p` with these runs as its memory (for planning).
    pub fn process(&self, p: &Process) -> Process {
        Process {
            memory: self.memory.clone(),
            ..p.clone()
        }
    }
}

/// Write the planned pages: those of each level from its image's frames.
pub(crate) fn write_chain<R: ReadAt + Sync>(
    reader: &ImageReader<R>,
    runs: &Runs,
    writes: &[PageWrite],
    to: &Target<'_>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64> {
    if runs.single() {
        return write_pages(reader, &runs.memory, writes, to, progress);
    }
    let total: u64 = writes.iter().map(|w| w.len).sum();
    let levels = runs.levels.iter().copied().max().unwrap_or(0);
    let mut done = 0u64;
    for level in 0..=levels {
        let mine: Vec<PageWrite> = writes
            .iter()
            .filter(|w| runs.levels[w.run] == level)
            .copied()
            .collect();
        if mine.is_empty() {
            continue;
        }
        let base = done;
        let mut p = |d: u64, _t: u64| progress(base + d, total);
        done += if level == 0 {
            write_pages(reader, &runs.memory, &mine, to, &mut p)?
        } else {
            let a = &reader.ancestors()[level - 1];
            write_pages(a, &runs.memory, &mine, to, &mut p)?
        };
    }
    Ok(done)
}
