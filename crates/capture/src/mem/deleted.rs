//! Deleted files the process maps: their whole contents, saved once per
//! file (`FileMapping.contents`, the same blob for every mapping of it),
//! so that restore can make the file again and map it; pages of the
//! mappings are then saved like those of any file (shared: none; private:
//! the ones copied on write). A deleted file that an fd of the process
//! also holds is saved with that fd (restore maps it through the fd), not
//! twice.
//!
//! What cannot be read (reading /proc/PID/map_files needs
//! CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN) is refused here, by name: a
//! dump never succeeds with what the restore would then refuse.

use super::vmas::{map_files_path, MapEntry};
use crate::error::{Error, Result};
use crate::PageSink;
use ckpt_image::{Blob, Vma, VmaBacking};
use ckpt_sys::Pid;
use std::collections::{HashMap, HashSet};
use std::io::Read;

/// The deleted files of a tree saved so far: each file's blob, and the
/// process that maps it shared (if one does), with whether an fd of that
/// process holds it.
#[derive(Default)]
pub(crate) struct Saved {
    blobs: HashMap<(u64, u64), Blob>,
    shared_by: HashMap<(u64, u64), (Pid, bool)>,
}

/// Fill `contents` of the mappings of deleted files that no fd in `held`
/// (dev, inode) holds; a file already saved (by this process or another
/// of the tree) gets the same blob. Two processes mapping one such file
/// shared, not both through fds that hold it (then the tree's one open
/// file), are refused: each would be restored with its own copy, and
/// what one writes would no longer reach the other.
pub(super) fn save<'e>(
    pid: Pid,
    entries: impl IntoIterator<Item = &'e MapEntry>,
    vmas: &mut [Vma],
    held: &HashSet<(u64, u64)>,
    saved: &mut Saved,
    sink: &mut dyn PageSink,
) -> Result<()> {
    for (e, v) in entries.into_iter().zip(vmas.iter_mut()) {
        let shared = v.shared;
        let VmaBacking::File(fm) = &mut v.backing else {
            continue;
        };
        if !fm.file.deleted {
            continue;
        }
        let key = (fm.file.dev, fm.file.inode);
        let holds = held.contains(&key);
        if shared {
            match saved.shared_by.get(&key) {
                Some(&(other, other_holds)) if other != pid && !(holds && other_holds) => {
                    return Err(Error::Vma {
                        pid,
                        start: e.start,
                        end: e.end,
                        name: String::from_utf8_lossy(&e.name).into_owned(),
                        what: format!(
                            "maps a deleted file shared, as pid {other} does: each would be restored with a copy of its own"
                        ),
                    })
                }
                _ => {
                    saved.shared_by.insert(key, (pid, holds));
                }
            }
        }
        if holds {
            continue;
        }
        let blob = match saved.blobs.get(&key) {
            Some(b) => b.clone(),
            None => {
                let data = read(pid, e)?;
                let b = sink.add_blob(&data)?;
                tracing::debug!(
                    file = %String::from_utf8_lossy(&fm.file.path),
                    bytes = data.len(),
                    "deleted mapped file saved"
                );
                saved.blobs.insert(key, b.clone());
                b
            }
        };
        fm.contents = blob;
        fm.has_contents = true;
    }
    Ok(())
}

/// The inode generation of every file mapped (not deleted), once per file:
/// opened through /proc/PID/map_files, else by its path when that is
/// still the same inode.
pub(super) fn generations<'e>(
    pid: Pid,
    entries: impl IntoIterator<Item = &'e MapEntry>,
    vmas: &mut [Vma],
    seen: &mut HashMap<(u64, u64), Option<u64>>,
) {
    use std::os::unix::fs::MetadataExt;
    for (e, v) in entries.into_iter().zip(vmas.iter_mut()) {
        let VmaBacking::File(fm) = &mut v.backing else {
            continue;
        };
        if fm.file.deleted {
            continue;
        }
        let key = (fm.file.dev, fm.file.inode);
        let g = *seen.entry(key).or_insert_with(|| {
            let f = std::fs::File::open(map_files_path(pid, e)).or_else(|_| {
                let f = std::fs::File::open(super::vmas::bytes_path(&fm.file.path))?;
                let md = f.metadata()?;
                if (md.dev(), md.ino()) == key {
                    Ok(f)
                } else {
                    Err(std::io::Error::from_raw_os_error(libc::ESTALE))
                }
            });
            let mut id = ckpt_image::FileIdentity::default();
            if let Ok(f) = f {
                crate::fds::add_generation(&mut id, &f);
            }
            id.generation
        });
        fm.file.generation = g;
    }
}

/// The whole contents of the deleted file mapped by `e`.
fn read(pid: Pid, e: &MapEntry) -> Result<Vec<u8>> {
    let path = map_files_path(pid, e);
    let fail = |err: std::io::Error| Error::Vma {
        pid,
        start: e.start,
        end: e.end,
        name: String::from_utf8_lossy(&e.name).into_owned(),
        what: format!(
            "maps a deleted file whose contents cannot be read to save them ({}: {}{})",
            path,
            crate::error::os_msg(&err),
            if err.raw_os_error() == Some(libc::EPERM) {
                "; reading it needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN"
            } else {
                ""
            }
        ),
    };
    let mut f = std::fs::File::open(&path).map_err(fail)?;
    let mut v = Vec::new();
    f.read_to_end(&mut v).map_err(fail)?;
    Ok(v)
}
