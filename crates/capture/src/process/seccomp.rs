//! Seccomp filters of every thread (PTRACE_SECCOMP_GET_FILTER and
//! _GET_METADATA, read from outside while the threads are stopped), into
//! the image's one table of filters: a filter is stored once however many
//! threads (and processes) run it, with a link to the filter installed
//! before it. Two chains that are equal from their oldest filter up are
//! taken as the same filters (the kernel does not say whether two threads
//! hold the same filter object or equal copies; a restore makes them the
//! same object where it can, see ckpt-restore's `process/seccomp.rs`).

use crate::error::{Error, Result, SysCtx};
use ckpt_image::{SeccompFilter, Thread};
use ckpt_sys::{ptrace, Pid};

/// SECCOMP_MODE_STRICT in /proc/PID/status "Seccomp:".
const MODE_STRICT: u32 = 1;

/// The filters of each thread of `pid` (all stopped) into `table`, each
/// thread's `seccomp_filter` pointing at its newest one. `mode` is the
/// process's seccomp mode (/proc/PID/status), `thread_status` the status
/// of each other thread. Strict mode (a process that
/// may only read, write, exit and return from signals) is saved as the
/// mode alone, when every thread is in it; a process where only some
/// threads are is refused.
pub(crate) fn save(
    pid: Pid,
    mode: u32,
    thread_status: &std::collections::BTreeMap<Pid, crate::procfs::Status>,
    threads: &mut [Thread],
    table: &mut Vec<SeccompFilter>,
) -> Result<()> {
    let mut strict = 0;
    for t in threads.iter_mut() {
        // The process's status is its main thread's.
        let tmode: u32 = match thread_status.get(&t.tid) {
            Some(st) => st.num("Seccomp")?,
            None => mode,
        };
        if tmode == MODE_STRICT {
            strict += 1;
            continue;
        }
        if tmode == 0 {
            continue;
        }
        let chain = read_chain(pid, t.tid)?;
        t.seccomp_filter = intern(table, chain);
    }
    if strict > 0 && (strict < threads.len() || mode != MODE_STRICT) {
        return Err(Error::NotPermitted {
            pid,
            why: format!(
                "{strict} of its {} threads run in seccomp strict mode (SECCOMP_MODE_STRICT), the others not: only a process whose threads all do can be saved",
                threads.len()
            ),
        });
    }
    Ok(())
}

/// The filters of thread `tid`, newest first (the kernel numbers them
/// from the oldest).
fn read_chain(pid: Pid, tid: Pid) -> Result<Vec<SeccompFilter>> {
    let mut chain = Vec::new();
    for index in 0.. {
        let what =
            || format!("thread {tid}: reading its seccomp filter {index} (needs CAP_SYS_ADMIN)");
        let Some(program) = ptrace::seccomp::get_filter(tid, index).ctx(pid, what)? else {
            break;
        };
        let flags = ptrace::seccomp::get_filter_flags(tid, index).ctx(pid, what)?;
        chain.push(SeccompFilter {
            parent: 0,
            program,
            flags,
        });
    }
    tracing::debug!(pid, tid, filters = chain.len(), "seccomp filters");
    chain.reverse();
    Ok(chain)
}

/// Put a chain (newest first) into `table`, sharing the entries of equal
/// chains; returns 1 + the index of its newest filter (0: empty chain).
pub(crate) fn intern(table: &mut Vec<SeccompFilter>, chain: Vec<SeccompFilter>) -> u32 {
    let mut parent = 0u32;
    for mut f in chain.into_iter().rev() {
        f.parent = parent;
        parent = match table.iter().position(|e| *e == f) {
            Some(i) => i as u32 + 1,
            None => {
                table.push(f);
                table.len() as u32
            }
        };
    }
    parent
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(byte: u8) -> SeccompFilter {
        SeccompFilter {
            parent: 0,
            program: vec![byte; 8],
            flags: 0,
        }
    }

    #[test]
    fn equal_chains_share_their_filters() {
        let mut table = Vec::new();
        // Newest first: thread 1 runs b on top of a, thread 2 runs c on top of a.
        assert_eq!(intern(&mut table, vec![f(2), f(1)]), 2);
        assert_eq!(intern(&mut table, vec![f(3), f(1)]), 3);
        assert_eq!(intern(&mut table, vec![f(2), f(1)]), 2);
        assert_eq!(intern(&mut table, vec![]), 0);
        // The same program on top of another parent is another filter.
        assert_eq!(intern(&mut table, vec![f(1), f(3), f(1)]), 4);
        let parents: Vec<u32> = table.iter().map(|e| e.parent).collect();
        assert_eq!(parents, vec![0, 1, 1, 3]);
    }
}
