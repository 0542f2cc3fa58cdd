//! hugetlb memory at the restore (the capture side: capture/src/mem/hugetlb.rs):
//! private MAP_HUGETLB areas are anonymous mappings with the page size's
//! flags (vmas.rs, `Backing::HugeAnon`); hugetlb memfds are made with
//! MFD_HUGETLB (fds/memfd.rs); shared hugetlb objects are mapped through
//! the fd that holds them, here.

use super::vmas::{own_fd_path, shm_rule, Backing, HeldFiles, PageRule};
use super::MemPlan;
use ckpt_image::{SharedMemory, ShmKind, Vma};

/// hugetlb shared memory: anonymous (always an object the stubs keep:
/// mem/mod.rs) or a memfd an fd of the process holds, mapped through its
/// fd (which is of hugetlbfs: the mapping is hugetlb memory again).
pub(super) fn shared_backing(
    v: &Vma,
    sm: &SharedMemory,
    what: &str,
    held: &HeldFiles,
    plan: &mut MemPlan,
) -> (Option<Backing>, PageRule) {
    let fd = match sm.kind {
        ShmKind::AnonymousShared => held.shared.get(&sm.id).copied(),
        ShmKind::Memfd => held.memfds.get(&sm.id).copied(),
        _ => None,
    };
    let Some(fd) = fd else {
        plan.errors.push(format!(
            "{what}: hugetlb memory ({:?}) that no fd of the restore holds cannot be made again",
            sm.kind
        ));
        return (None, PageRule::DataOnly);
    };
    let backing = Backing::File {
        path: own_fd_path(fd),
        flags: libc::O_RDWR,
        offset: sm.offset,
    };
    (Some(backing), shm_rule(v))
}
