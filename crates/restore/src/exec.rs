//! Executing a restore: the stub is seized and turned, by system calls
//! injected into it, into the saved process.

use crate::check::{check_and_open_as, creds_differ, own_creds, root_process, taken_ids};
use crate::error::{Error, Result, SysContext};
use crate::pages::write_pages;
use crate::pages::{CopyTarget, Redirect, Target};
use crate::plan::fds::{plan_fds, FdEnv};
use crate::plan::memory::{
    parse_maps, plan_huge_fills, plan_layout, plan_memory, Backing, HugeFill, Layout, MemPlan,
    ThpMode,
};
use crate::plan::regs::{first_handler, fit_xsave, itimer_setting, restart_fixup};
use crate::remote::Remote;
use crate::{stub, Report, RestoreOptions, RestoreStats, Restored, ZOMBIE_WAIT};
use ckpt_image::{ImageReader, Process, ReadAt, Registers, Thread, PROT_READ, PROT_WRITE};
use ckpt_sys::creds::{Caps, FsIds, FsSwitch};
use ckpt_sys::inject::{find_syscall_insn, TRAMPOLINE_CODE};
use ckpt_sys::ptrace::{self, Stop};
use ckpt_sys::{setup, sys};
use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Scratch memory after the trampoline page: arguments for injected calls.
const SCRATCH_LEN: u64 = 64 * 1024;
/// The top of the scratch area is the (never used) stack of new threads.
const THREAD_STACK: u64 = 4096;

const PROT_EXEC: u64 = 4;
const MREMAP_MAYMOVE: u64 = 1;
const MREMAP_FIXED: u64 = 2;
const RSEQ_FLAG_UNREGISTER: u64 = 1;
const PR_SET_VMA: u64 = 0x5356_4d41;
const PR_SET_MM: u64 = 35;
const PR_SET_MM_MAP: u64 = 14;
const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
const CLONE_THREAD_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM) as u64;
const SS_DISABLE: u32 = 2;
// userfaultfd(2) ABI (linux/userfaultfd.h; UFFDIO_MOVE since 6.8).
const UFFD_USER_MODE_ONLY: u64 = 1;
const UFFD_API: u64 = 0xaa;
const UFFD_FEATURE_MOVE: u64 = 1 << 16;
const UFFDIO_API: u64 = 0xc018_aa3f;
const UFFDIO_REGISTER: u64 = 0xc020_aa00;
const UFFDIO_UNREGISTER: u64 = 0x8010_aa01;
const UFFDIO_MOVE: u64 = 0xc028_aa05;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES: u64 = 2;
const UFFD_FEATURE_SIGBUS: u64 = 1 << 7;
const SS_AUTODISARM: u32 = 1 << 31;

/// Kills and reaps the half-built process unless disarmed.
struct Guard {
    pid: i32,
    tids: Vec<i32>,
    armed: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let _ = sys::kill(self.pid, libc::SIGKILL);
        for &t in self.tids.iter().filter(|&&t| t != self.pid) {
            setup::reap_blocking(t);
        }
        setup::reap_blocking(self.pid);
    }
}

fn u64s(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_ne_bytes()).collect()
}

fn check_error(e: String) -> Error {
    Error::Check(Report {
        errors: vec![e],
        warnings: Vec::new(),
    })
}

pub fn restore<R: ReadAt + Sync>(
    reader: &ImageReader<R>,
    opts: &RestoreOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Restored> {
    let t0 = Instant::now();
    let (report, as_saved) = check_and_open_as(reader, opts);
    if !report.errors.is_empty() {
        return Err(Error::Check(report));
    }
    let image = reader.image();
    let p = root_process(image).map_err(check_error)?;
    let page = setup::page_size();

    let fdplan = plan_fds(image, p, &FdEnv::current(), &mut |b| {
        reader.read_blob(b).map_err(|e| e.to_string())
    });
    if !fdplan.errors.is_empty() {
        return Err(Error::Check(Report {
            errors: fdplan.errors,
            warnings: fdplan.warnings,
        }));
    }
    let mem = plan_memory(image, p, page);
    if !mem.errors.is_empty() {
        return Err(Error::Check(Report {
            errors: mem.errors,
            warnings: mem.warnings,
        }));
    }
    let mut phases = vec![("plan", t0.elapsed())];

    // Paths of the image are opened with the saved user's rights where
    // check says so: by the stub and by the process being built, around
    // each of their opens of such paths.
    let switch = match &as_saved {
        Some(ids) => Some(FsSwitch::new(ids.clone()).map_err(|source| Error::Sys {
            context: "reading the restorer's own file access ids".into(),
            source,
        })?),
        None => None,
    };
    // The stub, at the saved pid (or, with new_pid, anywhere when it is taken).
    let keep_ids = !opts.new_pid || taken_ids(p).is_empty();
    let spawned = stub::spawn(
        &fdplan,
        switch.as_ref(),
        keep_ids.then_some(p.pid),
        ZOMBIE_WAIT,
    );
    let pid = match spawned {
        Err(Error::PidInUse { .. }) | Err(Error::Sys { .. }) if opts.new_pid && keep_ids => {
            stub::spawn(&fdplan, switch.as_ref(), None, Duration::ZERO)?
        }
        r => r?,
    };
    phases.push(("stub", t0.elapsed()));
    let mut guard = Guard {
        pid,
        tids: vec![pid],
        armed: true,
    };
    let mut b = Build {
        reader,
        p,
        pid,
        same_ids: pid == p.pid,
        page,
        mem: &mem,
        guard: &mut guard,
        injected: 0,
        page_bytes: 0,
        phases,
        t0,
        progress,
        huge_fill: opts.huge_fill,
        as_saved: switch.as_ref(),
    };
    let tids = b.run()?;
    let stats = RestoreStats {
        total: t0.elapsed(),
        page_bytes: b.page_bytes,
        injected_syscalls: b.injected,
        phases: b.phases,
    };
    guard.armed = false;
    Ok(Restored { pid, tids, stats })
}

struct Build<'a, R: ReadAt> {
    reader: &'a ImageReader<R>,
    p: &'a Process,
    pid: i32,
    same_ids: bool,
    page: u64,
    mem: &'a MemPlan,
    guard: &'a mut Guard,
    injected: u64,
    page_bytes: u64,
    phases: Vec<(&'static str, Duration)>,
    t0: Instant,
    progress: &'a mut dyn FnMut(u64, u64),
    huge_fill: Option<bool>,
    /// The saved user's rights, which the process takes around its opens
    /// of the image's paths (None: it keeps the restorer's).
    as_saved: Option<&'a FsSwitch>,
}

impl<R: ReadAt + Sync> Build<'_, R> {
    fn phase(&mut self, name: &'static str) {
        self.phases.push((name, self.t0.elapsed()));
    }

    fn stub_err(&self, what: impl Into<String>) -> Error {
        Error::Stub {
            pid: self.pid,
            what: what.into(),
        }
    }

    fn run(&mut self) -> Result<Vec<i32>> {
        let pid = self.pid;
        ptrace::seize(pid, ptrace::PTRACE_O_EXITKILL | ptrace::PTRACE_O_TRACECLONE)
            .ctx(|| format!("pid {pid}: seizing the restore stub"))?;
        ptrace::interrupt(pid).ctx(|| format!("pid {pid}: stopping the restore stub"))?;
        ptrace::wait_interrupt_stop(pid).ctx(|| format!("pid {pid}: stopping the restore stub"))?;

        let maps_text = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .ctx(|| format!("reading /proc/{pid}/maps"))?;
        let stub_maps = parse_maps(&maps_text);
        let huge = plan_huge_fills(self.mem, self.p, self.page, huge_fill_mode(self.huge_fill));
        let huge_lens: Vec<u64> = huge.iter().map(|h| h.len).collect();
        let layout = plan_layout(self.p, &stub_maps, SCRATCH_LEN, self.page, &huge_lens)
            .map_err(|e| self.stub_err(e))?;
        let vdso = stub_maps
            .iter()
            .find(|m| m.name == "[vdso]")
            .ok_or_else(|| self.stub_err("has no [vdso] to run system calls from"))?;
        let mem = ckpt_sys::remote::ProcMem::open(pid)
            .ctx(|| format!("pid {pid}: opening its memory"))?;
        let code = mem
            .read_vec(vdso.start, (vdso.end - vdso.start) as usize)
            .ctx(|| format!("pid {pid}: reading its vdso"))?;
        let ip = vdso.start
            + find_syscall_insn(&code)
                .ok_or_else(|| self.stub_err("no syscall instruction in the vdso"))?
                as u64;
        let mut main = Remote::new(pid, ip)?;

        // The stub inherited our rseq registration: the kernel would write
        // into memory about to be unmapped.
        let rseq = ptrace::get_rseq(pid).ctx(|| format!("pid {pid}: reading rseq"))?;
        if rseq.address != 0 {
            main.call(
                "rseq(unregister)",
                libc::SYS_rseq,
                &[
                    rseq.address,
                    u64::from(rseq.length),
                    RSEQ_FLAG_UNREGISTER,
                    u64::from(rseq.signature),
                ],
            )?;
        }
        self.address_space(&mut main, &layout)?;
        self.phase("address space");
        self.mappings(&mut main, &layout)?;
        self.phase("mappings");
        let scratch = layout.tramp + self.page;
        let (redirects, uffd) = self.huge_setup(&mut main, &layout, &huge, scratch)?;
        let copy = if uffd.is_none() {
            self.copy_setup(&mut main, scratch)?
        } else {
            None
        };
        let target = Target {
            pid,
            mem: &mem,
            redirects: &redirects,
            copy: copy.as_ref().map(|c| CopyTarget {
                fd: c.ours.as_raw_fd(),
                ranges: &c.ranges,
            }),
        };
        self.page_bytes = write_pages(
            self.reader,
            &self.p.memory,
            &self.mem.writes,
            &target,
            self.progress,
        )?;
        if let Some(c) = copy {
            self.copy_finish(&mut main, c, scratch)?;
        }
        if let Some(uffd) = uffd {
            self.huge_finish(&mut main, &layout, &huge, uffd, scratch)?;
        }
        for s in &self.mem.steps {
            if s.map_prot != s.prot {
                main.call(
                    &format!("mprotect of {}", s.what),
                    libc::SYS_mprotect,
                    &[s.start, s.len, u64::from(s.prot)],
                )?;
            }
        }
        self.phase("pages");
        self.process_state(&mut main, scratch)?;
        self.phase("process");
        let tids = self.threads(main, &layout, scratch)?;
        self.phase("threads");
        Ok(tids)
    }

    /// A userfaultfd of the target with its anonymous mappings that get
    /// pages registered, duplicated into this process, for UFFDIO_COPY
    /// (see [`CopyTarget`]). None where that is not possible (older
    /// kernel, no permission): the pages are written with
    /// process_vm_writev.
    fn copy_setup(&mut self, main: &mut Remote, scratch: u64) -> Result<Option<CopyFd>> {
        if std::env::var("CKPT_UFFD_COPY").as_deref() == Ok("0") {
            return Ok(None);
        }
        // Private anonymous mappings (not stacks) that get at least 1 MiB
        // of data (each costs two injected calls, which 1 MiB of faults
        // saved pays for), 4 MiB in all (for the userfaultfd itself): a
        // small process is quicker without.
        let steps = &self.mem.steps;
        let mut bytes = vec![0u64; steps.len()];
        for w in self.mem.writes.iter().filter(|w| !w.zero) {
            let i = steps.partition_point(|s| s.start + s.len <= w.addr);
            if let Some(s) = steps.get(i) {
                if s.start <= w.addr
                    && s.backing == Backing::Anon
                    && !s.shared
                    && !s.grows_down
                    && s.map_prot & PROT_WRITE != 0
                {
                    bytes[i] += w.len;
                }
            }
        }
        let want: Vec<bool> = bytes.iter().map(|&b| b >= 1 << 20).collect();
        let total: u64 = bytes
            .iter()
            .zip(&want)
            .filter(|(_, &w)| w)
            .map(|(b, _)| b)
            .sum();
        if total < 4 << 20 {
            return Ok(None);
        }
        let Some((theirs, api_ok)) = remote_userfaultfd(main, scratch, UFFD_FEATURE_SIGBUS)? else {
            return Ok(None);
        };
        let ours = if api_ok {
            dup_fd_of(self.pid, theirs as i32)
        } else {
            None
        };
        let Some(ours) = ours else {
            main.call("close", libc::SYS_close, &[theirs])?;
            return Ok(None);
        };
        let mut ranges = Vec::new();
        for (s, _) in steps.iter().zip(&want).filter(|(_, &w)| w) {
            main.write(
                scratch,
                &u64s(&[s.start, s.len, UFFDIO_REGISTER_MODE_MISSING, 0]),
            )?;
            let r = main.raw(
                &format!("ioctl(UFFDIO_REGISTER) of {}", s.what),
                libc::SYS_ioctl,
                &[theirs, UFFDIO_REGISTER, scratch],
            )?;
            if r == 0 {
                ranges.push((s.start, s.start + s.len));
            }
        }
        Ok(Some(CopyFd {
            ours,
            theirs,
            ranges,
        }))
    }

    /// Unregister the mappings (they keep their flags) and close the
    /// userfaultfd in the target.
    fn copy_finish(&mut self, main: &mut Remote, c: CopyFd, scratch: u64) -> Result<()> {
        for &(start, end) in &c.ranges {
            main.write(scratch, &u64s(&[start, end - start]))?;
            main.call(
                &format!("ioctl(UFFDIO_UNREGISTER) of {start:#x}..{end:#x}"),
                libc::SYS_ioctl,
                &[c.theirs, UFFDIO_UNREGISTER, scratch],
            )?;
        }
        main.call("close of the userfaultfd", libc::SYS_close, &[c.theirs])?;
        Ok(())
    }

    /// Temporary huge-page areas for the `huge` fills, and a userfaultfd
    /// able to UFFDIO_MOVE their pages into place afterwards. Without one
    /// (an older kernel, no permission) the pages are written directly.
    fn huge_setup(
        &mut self,
        main: &mut Remote,
        l: &Layout,
        huge: &[HugeFill],
        scratch: u64,
    ) -> Result<(Vec<Redirect>, Option<u64>)> {
        if huge.is_empty() {
            return Ok((Vec::new(), None));
        }
        let Some((fd, api_ok)) = remote_userfaultfd(main, scratch, UFFD_FEATURE_MOVE)? else {
            return Ok((Vec::new(), None));
        };
        let mut made = Vec::new();
        let mut ok = api_ok;
        for (h, &tmp) in huge.iter().zip(&l.huge_temp) {
            if !ok {
                break;
            }
            let s = &self.mem.steps[h.step];
            let flags =
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64;
            let got = main.raw(
                "mmap of a huge-page fill area",
                libc::SYS_mmap,
                &[tmp, h.len, u64::from(s.map_prot), flags, u64::MAX, 0],
            )?;
            if got as u64 != tmp {
                ok = false;
                break;
            }
            made.push((tmp, h.len));
            ok = main.raw(
                "madvise(MADV_HUGEPAGE) of a fill area",
                libc::SYS_madvise,
                &[tmp, h.len, libc::MADV_HUGEPAGE as u64],
            )? == 0;
        }
        if !ok {
            for (a, n) in made {
                main.call("munmap of a fill area", libc::SYS_munmap, &[a, n])?;
            }
            main.call("close", libc::SYS_close, &[fd])?;
            return Ok((Vec::new(), None));
        }
        let mut redirects: Vec<Redirect> = huge
            .iter()
            .zip(&l.huge_temp)
            .map(|(h, &to)| Redirect {
                start: h.start,
                end: h.start + h.len,
                to,
            })
            .collect();
        redirects.sort_by_key(|r| r.start);
        Ok((redirects, Some(fd)))
    }

    /// Move the filled huge-page areas into their mappings (registered with
    /// the userfaultfd only meanwhile: the mappings keep their flags).
    fn huge_finish(
        &mut self,
        main: &mut Remote,
        l: &Layout,
        huge: &[HugeFill],
        fd: u64,
        scratch: u64,
    ) -> Result<()> {
        let mut steps: Vec<usize> = huge.iter().map(|h| h.step).collect();
        steps.dedup();
        for &i in &steps {
            let s = &self.mem.steps[i];
            main.write(
                scratch,
                &u64s(&[s.start, s.len, UFFDIO_REGISTER_MODE_MISSING, 0]),
            )?;
            main.call(
                &format!("ioctl(UFFDIO_REGISTER) of {}", s.what),
                libc::SYS_ioctl,
                &[fd, UFFDIO_REGISTER, scratch],
            )?;
        }
        for (h, &tmp) in huge.iter().zip(&l.huge_temp) {
            main.write(
                scratch,
                &u64s(&[h.start, tmp, h.len, UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES, 0]),
            )?;
            let r = main.raw(
                "ioctl(UFFDIO_MOVE)",
                libc::SYS_ioctl,
                &[fd, UFFDIO_MOVE, scratch],
            )?;
            let moved =
                i64::from_ne_bytes(main.read(scratch + 32, 8)?.try_into().expect("8 bytes"));
            if r != 0 || moved != h.len as i64 {
                return Err(Error::Io {
                    context: format!(
                        "thread {}: ioctl(UFFDIO_MOVE) of {:#x}..{:#x} ({} of {} bytes moved)",
                        self.pid,
                        h.start,
                        h.start + h.len,
                        moved.max(0),
                        h.len
                    ),
                    source: std::io::Error::from_raw_os_error(if r < 0 {
                        -r as i32
                    } else {
                        libc::EIO
                    }),
                });
            }
            main.call("munmap of a fill area", libc::SYS_munmap, &[tmp, h.len])?;
        }
        for &i in &steps {
            let s = &self.mem.steps[i];
            main.write(scratch, &u64s(&[s.start, s.len]))?;
            main.call(
                &format!("ioctl(UFFDIO_UNREGISTER) of {}", s.what),
                libc::SYS_ioctl,
                &[fd, UFFDIO_UNREGISTER, scratch],
            )?;
        }
        main.call("close of the userfaultfd", libc::SYS_close, &[fd])?;
        Ok(())
    }

    /// Trampoline, unmap the stub, move the vdso.
    fn address_space(&mut self, main: &mut Remote, l: &Layout) -> Result<()> {
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64;
        let rw = u64::from(PROT_READ | PROT_WRITE);
        let got = main.call(
            "mmap of the trampoline",
            libc::SYS_mmap,
            &[l.tramp, l.tramp_len, rw, flags, u64::MAX, 0],
        )?;
        if got != l.tramp {
            return Err(self.stub_err(format!("trampoline mapped at {got:#x}, not {:#x}", l.tramp)));
        }
        main.write(l.tramp, &TRAMPOLINE_CODE)?;
        main.call(
            "mprotect of the trampoline",
            libc::SYS_mprotect,
            &[l.tramp, self.page, u64::from(PROT_READ) | PROT_EXEC],
        )?;
        main.inj.set_syscall_ip(l.tramp);
        for &(start, len) in &l.unmap {
            main.call(
                "munmap of the stub's memory",
                libc::SYS_munmap,
                &[start, len],
            )?;
        }
        for m in &l.moves {
            let got = main.call(
                &format!("mremap of {} to {:#x}", m.name, m.to),
                libc::SYS_mremap,
                &[m.from, m.len, m.len, MREMAP_MAYMOVE | MREMAP_FIXED, m.to],
            )?;
            if got != m.to {
                return Err(self.stub_err(format!("{} moved to {got:#x}, not {:#x}", m.name, m.to)));
            }
        }
        Ok(())
    }

    /// Every mapping of the image, writable where pages will be written.
    fn mappings(&mut self, main: &mut Remote, l: &Layout) -> Result<()> {
        let scratch = l.tramp + self.page;
        // The mapped files, each (path, flags) opened once, all together:
        // with the saved user's rights where the restore takes them.
        let mut files: BTreeMap<(Vec<u8>, i32), u64> = BTreeMap::new();
        let steps = &self.mem.steps;
        if steps
            .iter()
            .any(|s| matches!(s.backing, Backing::File { .. }))
        {
            with_rights(main, self.as_saved, scratch, |main| {
                for s in steps {
                    let Backing::File { path, flags, .. } = &s.backing else {
                        continue;
                    };
                    let key = (path.as_bytes().to_vec(), *flags);
                    if files.contains_key(&key) {
                        continue;
                    }
                    main.write_cstr(scratch, path.as_bytes())?;
                    let fd = main.call(
                        &format!("open of {} for {}", path.to_string_lossy(), s.what),
                        libc::SYS_openat,
                        &[
                            libc::AT_FDCWD as u64,
                            scratch,
                            (*flags | libc::O_CLOEXEC) as u64,
                        ],
                    )?;
                    files.insert(key, fd);
                }
                Ok(())
            })?;
        }
        let mut memfds: BTreeMap<u64, u64> = BTreeMap::new();
        let mut shm_made: BTreeMap<u64, u64> = BTreeMap::new();
        for s in &self.mem.steps {
            let prot = u64::from(s.map_prot);
            let share = if s.shared {
                libc::MAP_SHARED
            } else {
                libc::MAP_PRIVATE
            } as u64;
            let fixed = libc::MAP_FIXED as u64;
            let what = format!("mmap of {}", s.what);
            match &s.backing {
                Backing::Anon => {
                    let mut flags = share | fixed | libc::MAP_ANONYMOUS as u64;
                    if s.grows_down {
                        flags |= libc::MAP_GROWSDOWN as u64;
                    }
                    main.call(
                        &what,
                        libc::SYS_mmap,
                        &[s.start, s.len, prot, flags, u64::MAX, 0],
                    )?;
                }
                Backing::File {
                    path,
                    flags,
                    offset,
                } => {
                    let key = (path.as_bytes().to_vec(), *flags);
                    let fd = *files.get(&key).ok_or_else(|| {
                        self.stub_err(format!("{}: its file was not opened", s.what))
                    })?;
                    main.call(
                        &what,
                        libc::SYS_mmap,
                        &[s.start, s.len, prot, share | fixed, fd, *offset],
                    )?;
                }
                Backing::SharedAnon { id, offset } => {
                    let (tmp, size) = l.shm_temp[id];
                    if !shm_made.contains_key(id) {
                        let flags = (libc::MAP_SHARED
                            | libc::MAP_ANONYMOUS
                            | libc::MAP_FIXED_NOREPLACE) as u64;
                        main.call(
                            &format!("mmap of shared memory {id}"),
                            libc::SYS_mmap,
                            &[
                                tmp,
                                size,
                                u64::from(PROT_READ | PROT_WRITE),
                                flags,
                                u64::MAX,
                                0,
                            ],
                        )?;
                        shm_made.insert(*id, tmp);
                    }
                    main.call(
                        &what,
                        libc::SYS_mremap,
                        &[
                            tmp + offset,
                            0,
                            s.len,
                            MREMAP_MAYMOVE | MREMAP_FIXED,
                            s.start,
                        ],
                    )?;
                    main.call(
                        &format!("mprotect of {}", s.what),
                        libc::SYS_mprotect,
                        &[s.start, s.len, prot],
                    )?;
                }
                Backing::NewMemfd {
                    id,
                    name,
                    size,
                    offset,
                } => {
                    let fd = match memfds.get(id) {
                        Some(&fd) => fd,
                        None => {
                            main.write_cstr(scratch, name.as_bytes())?;
                            let fd = main.call(
                                &format!("memfd_create for {}", s.what),
                                libc::SYS_memfd_create,
                                &[scratch, libc::MFD_CLOEXEC as u64],
                            )?;
                            main.call(
                                &format!("ftruncate of memfd for {}", s.what),
                                libc::SYS_ftruncate,
                                &[fd, *size],
                            )?;
                            memfds.insert(*id, fd);
                            fd
                        }
                    };
                    main.call(
                        &what,
                        libc::SYS_mmap,
                        &[
                            s.start,
                            s.len,
                            prot,
                            libc::MAP_SHARED as u64 | fixed,
                            fd,
                            *offset,
                        ],
                    )?;
                }
            }
            for &adv in &s.advice {
                let r = main.raw(
                    &format!("madvise({adv}) of {}", s.what),
                    libc::SYS_madvise,
                    &[s.start, s.len, adv as u64],
                )?;
                let optional = matches!(
                    adv,
                    libc::MADV_MERGEABLE | libc::MADV_HUGEPAGE | libc::MADV_NOHUGEPAGE
                );
                if r < 0 && !(optional && r == -(libc::EINVAL as i64)) {
                    return Err(Error::Io {
                        context: format!("thread {}: madvise({adv}) of {}", self.pid, s.what),
                        source: std::io::Error::from_raw_os_error(-r as i32),
                    });
                }
            }
            if let Some(name) = &s.anon_name {
                main.write_cstr(scratch, name.as_bytes())?;
                // Naming is cosmetic (needs CONFIG_ANON_VMA_NAME): errors are ignored.
                let _ = main.raw(
                    "prctl(PR_SET_VMA_ANON_NAME)",
                    libc::SYS_prctl,
                    &[PR_SET_VMA, 0, s.start, s.len, scratch],
                )?;
            }
        }
        for fd in files.into_values().chain(memfds.into_values()) {
            main.call("close", libc::SYS_close, &[fd])?;
        }
        for (id, tmp) in shm_made {
            main.call(
                "munmap of a temporary shared mapping",
                libc::SYS_munmap,
                &[tmp, l.shm_temp[&id].1],
            )?;
        }
        Ok(())
    }

    /// mm, exe, cwd, umask, personality, handlers, itimers, limits, prctls.
    fn process_state(&mut self, main: &mut Remote, scratch: u64) -> Result<()> {
        let p = self.p;
        let pid = self.pid;
        // /proc/PID/exe: an fd of the executable, opened in the target;
        // and the working directory. Both with the saved user's rights
        // where the restore takes them.
        let mut exe_fd = u64::from(u32::MAX);
        let open_exe = !p.exe.path.is_empty() && !p.exe.deleted && !same_file_as_ours(&p.exe.path);
        if open_exe || !p.cwd.is_empty() {
            with_rights(main, self.as_saved, scratch, |main| {
                if open_exe {
                    main.write_cstr(scratch, &p.exe.path)?;
                    exe_fd = main.call(
                        &format!(
                            "open of the executable {}",
                            String::from_utf8_lossy(&p.exe.path)
                        ),
                        libc::SYS_openat,
                        &[
                            libc::AT_FDCWD as u64,
                            scratch,
                            (libc::O_RDONLY | libc::O_CLOEXEC) as u64,
                        ],
                    )?;
                }
                if !p.cwd.is_empty() {
                    main.write_cstr(scratch, &p.cwd)?;
                    main.call(
                        &format!("chdir to {}", String::from_utf8_lossy(&p.cwd)),
                        libc::SYS_chdir,
                        &[scratch],
                    )?;
                }
                Ok(())
            })?;
        }
        let m = &p.mm;
        let auxv: Vec<u64> = m.auxv.iter().flat_map(|&(k, v)| [k, v]).collect();
        let auxv_at = scratch + 0x1000;
        main.write(auxv_at, &u64s(&auxv))?;
        let mut map = u64s(&[
            m.start_code,
            m.end_code,
            m.start_data,
            m.end_data,
            m.start_brk,
            m.brk,
            m.start_stack,
            m.arg_start,
            m.arg_end,
            m.env_start,
            m.env_end,
            if auxv.is_empty() { 0 } else { auxv_at },
        ]);
        map.extend_from_slice(&((auxv.len() * 8) as u32).to_ne_bytes());
        map.extend_from_slice(&(exe_fd as u32).to_ne_bytes());
        main.write(scratch, &map)?;
        main.call(
            "prctl(PR_SET_MM_MAP)",
            libc::SYS_prctl,
            &[PR_SET_MM, PR_SET_MM_MAP, scratch, map.len() as u64, 0],
        )?;
        if exe_fd != u64::from(u32::MAX) {
            main.call("close", libc::SYS_close, &[exe_fd])?;
        }

        main.call("umask", libc::SYS_umask, &[u64::from(p.umask)])?;
        main.call(
            "personality",
            libc::SYS_personality,
            &[u64::from(p.personality)],
        )?;

        // Handlers for every signal but SIGKILL and SIGSTOP.
        let acts: Vec<u64> = p
            .sigactions
            .iter()
            .flat_map(|a| [a.handler, a.flags, a.restorer, a.mask])
            .collect();
        main.write(scratch, &u64s(&acts))?;
        // Signals the stub has at their default (neither caught nor ignored:
        // an all-zero action, as after exec) need no call when the image's
        // action is all-zero too.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ctx(|| format!("reading /proc/{pid}/status"))?;
        let mask_of = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .unwrap_or(u64::MAX)
        };
        let not_default = mask_of("SigCgt:") | mask_of("SigIgn:");
        for (i, a) in p.sigactions.iter().enumerate().take(64) {
            let sig = i as u64 + 1;
            if sig == libc::SIGKILL as u64 || sig == libc::SIGSTOP as u64 {
                continue;
            }
            let zero = a.handler == 0 && a.flags == 0 && a.restorer == 0 && a.mask == 0;
            if zero && not_default & (1 << i) == 0 {
                continue;
            }
            main.call(
                &format!("rt_sigaction({sig})"),
                libc::SYS_rt_sigaction,
                &[sig, scratch + i as u64 * 32, 0, 8],
            )?;
        }
        for t in &p.itimers {
            let Some((value, interval)) = itimer_setting(p, t) else {
                continue;
            };
            let tv = |ns: u64| [ns / 1_000_000_000, (ns % 1_000_000_000).div_ceil(1000)];
            let mut v = tv(interval).to_vec();
            v.extend(tv(value));
            main.write(scratch, &u64s(&v))?;
            main.call(
                &format!("setitimer({})", t.which),
                libc::SYS_setitimer,
                &[u64::from(t.which), scratch, 0],
            )?;
        }

        // Per-process prctls that threads inherit or share.
        if p.timer_slack_ns != 0 {
            main.call(
                "prctl(PR_SET_TIMERSLACK)",
                libc::SYS_prctl,
                &[libc::PR_SET_TIMERSLACK as u64, p.timer_slack_ns],
            )?;
        }
        if p.child_subreaper {
            main.call(
                "prctl(PR_SET_CHILD_SUBREAPER)",
                libc::SYS_prctl,
                &[libc::PR_SET_CHILD_SUBREAPER as u64, 1],
            )?;
        }
        if p.thp_disabled {
            main.call(
                "prctl(PR_SET_THP_DISABLE)",
                libc::SYS_prctl,
                &[libc::PR_SET_THP_DISABLE as u64, 1, 0, 0, 0],
            )?;
        }
        if p.creds.no_new_privs {
            main.call(
                "prctl(PR_SET_NO_NEW_PRIVS)",
                libc::SYS_prctl,
                &[libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0],
            )?;
        }

        // Limits, from outside, only where they differ.
        for l in &p.rlimits {
            let cur = setup::prlimit(pid, l.resource, None)
                .ctx(|| format!("pid {pid}: reading RLIMIT_{}", l.name))?;
            if cur != (l.soft, l.hard) {
                setup::prlimit(pid, l.resource, Some((l.soft, l.hard))).ctx(|| {
                    format!(
                        "pid {pid}: setting RLIMIT_{} to soft {} hard {}",
                        l.name, l.soft, l.hard
                    )
                })?;
            }
        }
        let oom = format!("/proc/{pid}/oom_score_adj");
        let cur = std::fs::read_to_string(&oom)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        if cur != Some(p.oom_score_adj) {
            // Lowering it needs CAP_SYS_RESOURCE: best effort.
            let _ = std::fs::write(&oom, p.oom_score_adj.to_string());
        }
        Ok(())
    }

    /// Create the other threads, then give every thread its state, and let go.
    fn threads(&mut self, mut main: Remote, l: &Layout, scratch: u64) -> Result<Vec<i32>> {
        let p = self.p;
        let pid = self.pid;
        let stack_top = l.tramp + l.tramp_len;
        let mut tids = vec![pid];
        for t in p.threads.iter().skip(1) {
            let want = if self.same_ids { t.tid } else { 0 };
            let tid_at = scratch + 0x200;
            main.write(tid_at, &want.to_ne_bytes())?;
            let args = [
                CLONE_THREAD_FLAGS,
                0,
                0,
                0,
                0,
                stack_top - THREAD_STACK,
                THREAD_STACK,
                0,
                if self.same_ids { tid_at } else { 0 },
                u64::from(self.same_ids),
                0,
            ];
            main.write(scratch, &u64s(&args))?;
            let r = main.raw(
                &format!("clone3 of thread {}", t.tid),
                libc::SYS_clone3,
                &[scratch, 88],
            )?;
            if r == -(libc::EEXIST as i64) {
                let holder = stub::holder_of(t.tid)
                    .map(|h| h.0)
                    .unwrap_or_else(|| "another task".into());
                return Err(Error::PidInUse { pid: t.tid, holder });
            }
            if r < 0 {
                return Err(Error::Io {
                    context: format!("thread {pid}: clone3 of thread {}", t.tid),
                    source: std::io::Error::from_raw_os_error(-r as i32),
                });
            }
            let tid = r as i32;
            self.guard.tids.push(tid);
            loop {
                match ptrace::wait(tid)
                    .ctx(|| format!("thread {tid}: waiting for its first stop"))?
                {
                    Stop::Event { .. } | Stop::Signal(libc::SIGSTOP) => break,
                    Stop::Signal(_) => {
                        ptrace::cont(tid, 0).ctx(|| format!("thread {tid}: resuming"))?
                    }
                    other => {
                        return Err(self.stub_err(format!("new thread {tid} ended: {other:?}")))
                    }
                }
            }
            tids.push(tid);
        }
        let tid_map: BTreeMap<i32, i32> = p
            .threads
            .iter()
            .map(|t| t.tid)
            .zip(tids.iter().copied())
            .collect();

        // Injectors for the other threads; the main thread's stays `main`.
        let mut others: Vec<Remote> = Vec::new();
        for &tid in tids.iter().skip(1) {
            others.push(Remote::new(tid, l.tramp)?);
        }
        let own = own_creds();
        let set_creds = creds_differ(p, &own);
        for (i, t) in p.threads.iter().enumerate() {
            let r = if i == 0 {
                &mut main
            } else {
                &mut others[i - 1]
            };
            self.thread_state(r, t, scratch)?;
        }
        self.posix_timers(&mut main, scratch, &tid_map)?;
        // Pending signals: all are blocked while injecting, so they queue.
        for si in &p.shared_pending {
            main.write(scratch, &si.raw)?;
            main.call(
                &format!("rt_sigqueueinfo({})", si.signo),
                libc::SYS_rt_sigqueueinfo,
                &[pid as u64, si.signo as u64, scratch],
            )?;
        }
        for (i, t) in p.threads.iter().enumerate() {
            let r = if i == 0 {
                &mut main
            } else {
                &mut others[i - 1]
            };
            let tid = r.tid;
            for si in &t.pending {
                r.write(scratch, &si.raw)?;
                r.call(
                    &format!("rt_tgsigqueueinfo({})", si.signo),
                    libc::SYS_rt_tgsigqueueinfo,
                    &[pid as u64, tid as u64, si.signo as u64, scratch],
                )?;
            }
            if set_creds {
                set_thread_creds(r, p, scratch)?;
            }
        }
        // Credential changes reset these two: set them last. (A change of
        // ids leaves the process dumpable only if fs.suid_dumpable says so:
        // a process saved dumpable is made so again.)
        if !p.dumpable || set_creds {
            main.call(
                "prctl(PR_SET_DUMPABLE)",
                libc::SYS_prctl,
                &[libc::PR_SET_DUMPABLE as u64, u64::from(p.dumpable)],
            )?;
        }
        main.call(
            "prctl(PR_SET_PDEATHSIG)",
            libc::SYS_prctl,
            &[libc::PR_SET_PDEATHSIG as u64, p.parent_death_signal as u64],
        )?;
        main.call(
            "munmap of the trampoline",
            libc::SYS_munmap,
            &[l.tramp, l.tramp_len],
        )?;
        self.injected = main.count() + others.iter().map(|r| r.count()).sum::<u64>();

        // Registers, FPU state and masks; then let every thread go.
        for (i, t) in p.threads.iter().enumerate() {
            let tid = tids[i];
            let Registers::X8664(x) = &t.regs else {
                return Err(self.stub_err(format!("thread {}: no registers in the image", t.tid)));
            };
            let mut g = x.gprs();
            restart_fixup(&mut g, first_handler(p, t).as_ref());
            ptrace::set_regs(tid, &g).ctx(|| format!("thread {tid}: setting registers"))?;
            if !x.xsave.is_empty() {
                let cur = ptrace::get_xstate(tid)
                    .ctx(|| format!("thread {tid}: reading the XSAVE area"))?;
                ptrace::set_xstate(tid, &fit_xsave(&x.xsave, cur.len()))
                    .ctx(|| format!("thread {tid}: setting the XSAVE area"))?;
            }
            ptrace::set_sigmask(tid, t.blocked)
                .ctx(|| format!("thread {tid}: setting the signal mask"))?;
        }
        for &tid in tids.iter().skip(1).chain(tids.first()) {
            ptrace::detach(tid, 0).ctx(|| format!("thread {tid}: detaching"))?;
        }
        Ok(tids)
    }

    /// Per-thread kernel state, injected in the thread itself.
    fn thread_state(&self, r: &mut Remote, t: &Thread, scratch: u64) -> Result<()> {
        let tid = r.tid;
        r.call(
            "set_tid_address",
            libc::SYS_set_tid_address,
            &[t.clear_child_tid],
        )?;
        let len = if t.robust_list.len != 0 {
            t.robust_list.len
        } else {
            24
        };
        r.call(
            "set_robust_list",
            libc::SYS_set_robust_list,
            &[t.robust_list.head, len],
        )?;
        if t.rseq.address != 0 {
            r.call(
                "rseq",
                libc::SYS_rseq,
                &[
                    t.rseq.address,
                    u64::from(t.rseq.length),
                    0,
                    u64::from(t.rseq.signature),
                ],
            )?;
        }
        let a = &t.altstack;
        let ss: [u64; 3] = if a.flags & SS_DISABLE != 0 || a.size == 0 {
            [0, u64::from(SS_DISABLE), 0]
        } else {
            [a.sp, u64::from(a.flags & SS_AUTODISARM), a.size]
        };
        r.write(scratch, &u64s(&ss))?;
        r.call("sigaltstack", libc::SYS_sigaltstack, &[scratch, 0])?;
        let comm = if t.comm.is_empty() {
            &self.p.comm
        } else {
            &t.comm
        };
        if !comm.is_empty() {
            let mut c = comm.clone();
            c.truncate(15);
            r.write_cstr(scratch, &c)?;
            r.call(
                "prctl(PR_SET_NAME)",
                libc::SYS_prctl,
                &[libc::PR_SET_NAME as u64, scratch],
            )?;
        }
        // Scheduling, from outside, where it differs.
        let s = &t.sched;
        if setup::sched_getscheduler(tid).ok() != Some((s.policy, s.priority)) {
            setup::sched_setscheduler(tid, s.policy, s.priority).ctx(|| {
                format!(
                    "thread {tid}: sched_setscheduler({}, {})",
                    s.policy, s.priority
                )
            })?;
        }
        if setup::get_nice(tid).ok() != Some(s.nice) {
            setup::set_nice(tid, s.nice)
                .ctx(|| format!("thread {tid}: setting nice {}", s.nice))?;
        }
        if !t.cpu_affinity.is_empty() {
            if let Ok(allowed) = setup::sched_getaffinity(0) {
                let want: Vec<u64> = t
                    .cpu_affinity
                    .iter()
                    .enumerate()
                    .map(|(i, w)| w & allowed.get(i).copied().unwrap_or(0))
                    .collect();
                let cur = setup::sched_getaffinity(tid).unwrap_or_default();
                let trim = |v: &[u64]| -> Vec<u64> {
                    let mut v = v.to_vec();
                    while v.last() == Some(&0) {
                        v.pop();
                    }
                    v
                };
                if want.iter().any(|&w| w != 0) && trim(&want) != trim(&cur) {
                    setup::sched_setaffinity(tid, &want)
                        .ctx(|| format!("thread {tid}: sched_setaffinity"))?;
                }
            }
        }
        Ok(())
    }

    /// POSIX timers with their saved ids.
    fn posix_timers(
        &self,
        main: &mut Remote,
        scratch: u64,
        tid_map: &BTreeMap<i32, i32>,
    ) -> Result<()> {
        let mut timers = self.p.posix_timers.clone();
        if timers.is_empty() {
            return Ok(());
        }
        timers.sort_by_key(|t| t.id);
        let restore_ids = main.raw(
            "prctl(PR_TIMER_CREATE_RESTORE_IDS)",
            libc::SYS_prctl,
            &[PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0],
        )? == 0;
        let sev_at = scratch + 0x100;
        let id_at = scratch + 0x200;
        let mut dummies = Vec::new();
        for t in &timers {
            let mut sev = vec![0u8; 64];
            sev[0..8].copy_from_slice(&t.value.to_ne_bytes());
            sev[8..12].copy_from_slice(&t.signo.to_ne_bytes());
            sev[12..16].copy_from_slice(&t.notify.to_ne_bytes());
            let ntid = tid_map.get(&t.notify_tid).copied().unwrap_or(t.notify_tid);
            sev[16..20].copy_from_slice(&ntid.to_ne_bytes());
            main.write(sev_at, &sev)?;
            loop {
                main.write(id_at, &t.id.to_ne_bytes())?;
                main.call(
                    &format!("timer_create of timer {}", t.id),
                    libc::SYS_timer_create,
                    &[t.clock as u64, sev_at, id_at],
                )?;
                let got = i32::from_ne_bytes(main.read(id_at, 4)?.try_into().expect("4 bytes"));
                if got == t.id {
                    break;
                }
                if restore_ids || got > t.id {
                    return Err(self.stub_err(format!(
                        "timer_create gave timer id {got}, not the saved {}",
                        t.id
                    )));
                }
                dummies.push(got);
            }
            if t.value_ns != 0 {
                let ts = |ns: u64| [ns / 1_000_000_000, ns % 1_000_000_000];
                let mut v = ts(t.interval_ns).to_vec();
                v.extend(ts(t.value_ns));
                main.write(scratch, &u64s(&v))?;
                main.call(
                    &format!("timer_settime of timer {}", t.id),
                    libc::SYS_timer_settime,
                    &[t.id as u64, 0, scratch, 0],
                )?;
            }
        }
        if restore_ids {
            main.call(
                "prctl(PR_TIMER_CREATE_RESTORE_IDS)",
                libc::SYS_prctl,
                &[PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0],
            )?;
        }
        for d in dummies {
            main.call("timer_delete", libc::SYS_timer_delete, &[d as u64])?;
        }
        Ok(())
    }
}

/// A userfaultfd of the target for UFFDIO_COPY: its number there, our
/// duplicate, the registered ranges.
struct CopyFd {
    ours: std::os::fd::OwnedFd,
    theirs: u64,
    ranges: Vec<(u64, u64)>,
}

/// A duplicate of fd `fd` of `pid` (pidfd_getfd), or None.
fn dup_fd_of(pid: i32, fd: i32) -> Option<std::os::fd::OwnedFd> {
    setup::fd_of(pid, fd).ok()
}

/// The THP mode huge-page fills are planned for: the system's, unless
/// the option or CKPT_HUGE_FILL=0/1 says otherwise or free huge pages are handed back to
/// a hypervisor (virtio-balloon free page reporting of 2 MiB blocks). Then
/// a fresh huge page is backed by the host only as it is cleared, one
/// host fault per 4 KiB, which made huge-page fills 2-3 times slower than
/// 4 KiB faults on pages the dumped process just freed (measured on such a
/// VM); on bare metal they cut the fault cost by far.
/// A userfaultfd made in the process being built (user faults only,
/// close-on-exec, non-blocking) and its UFFDIO_API handshake asking for
/// `features`: the fd and whether the handshake succeeded; None when the
/// kernel refuses userfaultfd.
fn remote_userfaultfd(
    main: &mut Remote,
    scratch: u64,
    features: u64,
) -> Result<Option<(u64, bool)>> {
    let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64 | UFFD_USER_MODE_ONLY;
    let fd = main.raw("userfaultfd", libc::SYS_userfaultfd, &[flags])?;
    if fd < 0 {
        return Ok(None);
    }
    let fd = fd as u64;
    main.write(scratch, &u64s(&[UFFD_API, features, 0]))?;
    let api = main.raw(
        "ioctl(UFFDIO_API)",
        libc::SYS_ioctl,
        &[fd, UFFDIO_API, scratch],
    )?;
    Ok(Some((fd, api == 0)))
}

fn huge_fill_mode(opt: Option<bool>) -> ThpMode {
    let sys = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .map(|s| ThpMode::parse(&s))
        .unwrap_or(ThpMode::Never);
    let env = match std::env::var("CKPT_HUGE_FILL").as_deref() {
        Ok("0") => Some(false),
        Ok("1") => Some(true),
        _ => None,
    };
    match opt.or(env) {
        Some(false) => return ThpMode::Never,
        Some(true) => return sys,
        None => {}
    }
    if sys == ThpMode::Madvise && free_huge_pages_reported() {
        return ThpMode::Never;
    }
    sys
}

/// Free page reporting to a hypervisor is on for blocks of 2 MiB or less.
fn free_huge_pages_reported() -> bool {
    const VIRTIO_BALLOON_F_REPORTING: usize = 5;
    let order =
        std::fs::read_to_string("/sys/module/page_reporting/parameters/page_reporting_order")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
    match order {
        Some(o) if o <= 9 => {}
        _ => return false,
    }
    let Ok(dir) = std::fs::read_dir("/sys/bus/virtio/drivers/virtio_balloon") else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read_to_string(e.path().join("features"))
            .is_ok_and(|f| f.as_bytes().get(VIRTIO_BALLOON_F_REPORTING) == Some(&b'1'))
    })
}

/// setfsuid/setfsgid in the thread, checked: they return the previous id
/// whether they worked or not, so a second call with an invalid id (which
/// changes nothing and returns the current one) tells.
fn set_fs_id(r: &mut Remote, name: &str, nr: i64, id: u32) -> Result<()> {
    r.raw(name, nr, &[id.into()])?;
    let now = r.raw(name, nr, &[u32::MAX.into()])? as u32;
    if now != id {
        return Err(Error::Io {
            context: format!("thread {}: {name}({id}) left it at {now}", r.tid),
            source: std::io::Error::from_raw_os_error(libc::EPERM),
        });
    }
    Ok(())
}

/// Give the thread `ids` as its groups, fs gid and fs uid (each checked).
fn set_fs_ids(r: &mut Remote, ids: &FsIds, scratch: u64) -> Result<()> {
    let groups: Vec<u8> = ids.groups.iter().flat_map(|g| g.to_ne_bytes()).collect();
    r.write(scratch, &groups)?;
    r.call(
        "setgroups",
        libc::SYS_setgroups,
        &[ids.groups.len() as u64, scratch],
    )?;
    set_fs_id(r, "setfsgid", libc::SYS_setfsgid, ids.gid)?;
    set_fs_id(r, "setfsuid", libc::SYS_setfsuid, ids.uid)
}

/// capset(2) of the thread.
fn set_caps(r: &mut Remote, caps: Caps, scratch: u64) -> Result<()> {
    r.write(scratch, &caps.capset_args())?;
    r.call("capset", libc::SYS_capset, &[scratch, scratch + 8])?;
    Ok(())
}

/// Run `f` (opens of paths of the image by the thread) with the saved
/// user's rights, the way the stub opens its files ([`FsSwitch`]): that
/// user's groups, fs gid and fs uid and no effective capabilities; then
/// the restorer's back, and the dumpable flag the kernel reset meanwhile.
/// Without `switch`, just `f`.
fn with_rights<T>(
    r: &mut Remote,
    switch: Option<&FsSwitch>,
    scratch: u64,
    f: impl FnOnce(&mut Remote) -> Result<T>,
) -> Result<T> {
    let Some(sw) = switch else {
        return f(r);
    };
    let dumpable = r.call(
        "prctl(PR_GET_DUMPABLE)",
        libc::SYS_prctl,
        &[libc::PR_GET_DUMPABLE as u64, 0, 0, 0, 0],
    )?;
    set_fs_ids(r, sw.ids(), scratch)?;
    set_caps(r, sw.switched_caps(), scratch)?;
    let t = f(r)?;
    set_caps(r, sw.own_caps(), scratch)?;
    set_fs_ids(r, sw.own_ids(), scratch)?;
    set_caps(r, sw.own_caps(), scratch)?;
    if dumpable <= 1 {
        r.call(
            "prctl(PR_SET_DUMPABLE)",
            libc::SYS_prctl,
            &[libc::PR_SET_DUMPABLE as u64, dumpable, 0, 0, 0],
        )?;
    }
    Ok(t)
}

/// uids, gids and groups of one thread (credentials are per thread in the kernel).
fn set_thread_creds(r: &mut Remote, p: &Process, scratch: u64) -> Result<()> {
    let c = &p.creds;
    let groups: Vec<u8> = c.groups.iter().flat_map(|g| g.to_ne_bytes()).collect();
    r.write(scratch, &groups)?;
    r.call(
        "setgroups",
        libc::SYS_setgroups,
        &[c.groups.len() as u64, scratch],
    )?;
    r.call(
        "setresgid",
        libc::SYS_setresgid,
        &[c.rgid.into(), c.egid.into(), c.sgid.into()],
    )?;
    set_fs_id(r, "setfsgid", libc::SYS_setfsgid, c.fsgid)?;
    r.call(
        "setresuid",
        libc::SYS_setresuid,
        &[c.ruid.into(), c.euid.into(), c.suid.into()],
    )?;
    set_fs_id(r, "setfsuid", libc::SYS_setfsuid, c.fsuid)?;
    Ok(())
}

/// Whether `path` is the restorer's own executable (then /proc/PID/exe is
/// already right and PR_SET_MM_MAP could not replace it while it is mapped).
fn same_file_as_ours(path: &[u8]) -> bool {
    use std::os::unix::fs::MetadataExt;
    let p = String::from_utf8_lossy(path);
    match (std::fs::metadata(&*p), std::fs::metadata("/proc/self/exe")) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}
