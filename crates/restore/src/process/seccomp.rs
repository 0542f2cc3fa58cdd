//! Seccomp filters, installed again by system calls injected into each
//! thread once its state is set, while every thread is traced with
//! PTRACE_O_SUSPEND_SECCOMP (the injected calls that follow, and a filter
//! that forbids seccomp() itself, cannot stop the restore; the filters
//! apply from the moment the threads are let go).
//!
//! Threads share filter objects where the image's chains share entries
//! from the oldest up, so that the process can later synchronize them
//! (SECCOMP_FILTER_FLAG_TSYNC needs every other thread's filter to be an
//! ancestor of the caller's): the filters all threads have in common are
//! installed once in the main thread with TSYNC, which gives every thread
//! those very objects; each thread then installs the rest of its chain
//! itself. Two threads sharing filters beyond what all threads share get
//! equal copies of those (they filter the same; a later TSYNC between just
//! those two would fail).

use crate::error::{Error, Result};
use crate::remote::Remote;
use crate::Report;
use ckpt_image::{Image, Process, SeccompFilter};
use ckpt_sys::ptrace;

const SECCOMP_SET_MODE_STRICT: u64 = 0;
const SECCOMP_SET_MODE_FILTER: u64 = 1;
/// Seccomp mode 1 (/proc status, the image's `seccompMode`).
const MODE_STRICT: u32 = 1;
const SECCOMP_FILTER_FLAG_TSYNC: u64 = 1;
/// The flags a filter can be installed with again (LOG, SPEC_ALLOW).
const KEPT_FLAGS: u64 = 2 | 4;

/// The filter chain of thread `i` of `p`, oldest first (indices into the
/// image's table); None when a link is out of the table.
fn chain(image: &Image, filter: u32) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    let mut at = filter;
    while at != 0 {
        let i = at as usize - 1;
        let f = image.seccomp_filters.get(i)?;
        out.push(i);
        if out.len() > image.seccomp_filters.len() {
            return None;
        }
        at = f.parent;
    }
    out.reverse();
    Some(out)
}

/// What a restore cannot do with the process's seccomp state.
pub(crate) fn check(image: &Image, p: &Process, r: &mut Report) {
    let any = p.threads.iter().any(|t| t.seccomp_filter != 0);
    match p.creds.seccomp_mode {
        0 => {}
        MODE_STRICT if !any => {}
        2 if any => {}
        2 => r.errors.push(
            "the process runs under seccomp, and the image (from a version that did not save filters) does not hold its filters: it would run unconfined".into(),
        ),
        m => r.errors.push(format!(
            "the process runs in seccomp mode {m}, which cannot be restored"
        )),
    }
    for t in &p.threads {
        if chain(image, t.seccomp_filter).is_none() {
            r.errors.push(format!(
                "thread {}: its seccomp filter chain ({}) is not in the image's filter table",
                t.tid, t.seccomp_filter
            ));
        }
    }
}

/// Install the filters of every thread (`threads[i]` is thread i of `p`),
/// the main one first; `scratch` holds the programs meanwhile.
pub(crate) fn install(
    threads: &mut [&mut Remote],
    image: &Image,
    p: &Process,
    scratch: u64,
) -> Result<()> {
    let chains: Vec<Vec<usize>> = p
        .threads
        .iter()
        .map(|t| chain(image, t.seccomp_filter).unwrap_or_default())
        .collect();
    let strict = p.creds.seccomp_mode == MODE_STRICT;
    if chains.iter().all(Vec::is_empty) && !strict {
        return Ok(());
    }
    for r in threads.iter() {
        ptrace::set_options(
            r.tid,
            ptrace::PTRACE_O_EXITKILL
                | ptrace::PTRACE_O_TRACECLONE
                | ptrace::PTRACE_O_TRACESYSGOOD
                | ptrace::PTRACE_O_SUSPEND_SECCOMP,
        )
        .map_err(|source| Error::Sys {
            context: format!(
                "thread {}: suspending seccomp while it is built (needs CAP_SYS_ADMIN)",
                r.tid
            ),
            source,
        })?;
    }
    if strict {
        // Every thread (the capture saves no other case): from when it is
        // let go, only read, write, exit and sigreturn.
        for r in threads.iter_mut() {
            let res = r.raw(
                "seccomp(SECCOMP_SET_MODE_STRICT)",
                libc::SYS_seccomp,
                &[SECCOMP_SET_MODE_STRICT, 0, 0],
            )?;
            if res != 0 {
                return Err(Error::Io {
                    context: format!("thread {}: entering seccomp strict mode", r.tid),
                    error: std::io::Error::from_raw_os_error(-res as i32),
                });
            }
        }
        tracing::debug!(threads = threads.len(), "seccomp strict mode");
        return Ok(());
    }
    let common = chains.iter().skip(1).fold(chains[0].len(), |n, c| {
        n.min(c.iter().zip(&chains[0]).take_while(|(a, b)| a == b).count())
    });
    let tsync = if threads.len() > 1 {
        SECCOMP_FILTER_FLAG_TSYNC
    } else {
        0
    };
    for &i in &chains[0][..common] {
        install_one(threads[0], &image.seccomp_filters[i], tsync, scratch)?;
    }
    for (r, c) in threads.iter_mut().zip(&chains) {
        for &i in &c[common..] {
            install_one(r, &image.seccomp_filters[i], 0, scratch)?;
        }
    }
    tracing::debug!(
        filters = image.seccomp_filters.len(),
        shared = common,
        "seccomp filters installed"
    );
    Ok(())
}

/// seccomp(SECCOMP_SET_MODE_FILTER) of one filter in one thread.
fn install_one(r: &mut Remote, f: &SeccompFilter, extra: u64, scratch: u64) -> Result<()> {
    let prog_at = scratch + 0x1000;
    r.write(prog_at, &f.program)?;
    // struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    let mut fprog = Vec::with_capacity(16);
    fprog.extend_from_slice(&((f.program.len() / 8) as u64).to_ne_bytes());
    fprog.extend_from_slice(&prog_at.to_ne_bytes());
    r.write(scratch, &fprog)?;
    let flags = (f.flags & KEPT_FLAGS) | extra;
    let res = r.raw(
        "seccomp(SECCOMP_SET_MODE_FILTER)",
        libc::SYS_seccomp,
        &[SECCOMP_SET_MODE_FILTER, flags, scratch],
    )?;
    if res != 0 {
        let what = if res > 0 {
            format!(
                "thread {}: seccomp(TSYNC): thread {res} cannot take the shared filters",
                r.tid
            )
        } else {
            format!("thread {}: installing a seccomp filter", r.tid)
        };
        return Err(Error::Io {
            context: what,
            error: std::io::Error::from_raw_os_error(if res < 0 {
                -res as i32
            } else {
                libc::ESRCH
            }),
        });
    }
    Ok(())
}
