//! Conversion between the model ([`crate::model`]) and the Cap'n Proto
//! metadata message (`schema/ckpt.capnp`, generated code in
//! [`crate::ckpt_capnp`]).

use crate::ckpt_capnp as c;
use crate::model::*;
use crate::{Error, Result};
use capnp::message::{self, ReaderOptions};
use capnp::{data_list, primitive_list, serialize, text_list};

/// Nesting limit for metadata messages (the schema nests < 12 deep).
pub const NESTING_LIMIT: i32 = 64;

/// Reader options for a message of `len` bytes: traversal limit
/// proportional to the message size.
pub fn reader_options(len: usize) -> ReaderOptions {
    let words = (len as u64) / 8;
    let mut o = ReaderOptions::new();
    o.traversal_limit_in_words(Some(words.saturating_mul(4).saturating_add(1024) as usize));
    o.nesting_limit(NESTING_LIMIT);
    o
}

/// Serialize the model into a standard (unpacked) Cap'n Proto stream message.
pub fn encode(image: &Image) -> Vec<u8> {
    let mut msg = message::Builder::new(message::HeapAllocator::new().first_segment_words(1 << 16));
    {
        let root = msg.init_root::<c::image::Builder>();
        enc_image(image, root);
    }
    serialize::write_message_to_words(&msg)
}

fn len32(n: usize) -> u32 {
    // Lists longer than u32::MAX cannot be represented; model lists never get
    // near that (the writer validates images before encoding).
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn enc_image(m: &Image, mut b: c::image::Builder) {
    b.set_format_major(m.format_major);
    b.set_format_minor(m.format_minor);
    b.set_tool_version(m.tool_version.as_str());
    b.set_created_ns(m.created_ns);
    enc_host(&m.host, b.reborrow().init_host());
    {
        let mut l = b.reborrow().init_processes(len32(m.processes.len()));
        for (i, p) in m.processes.iter().enumerate() {
            enc_process(p, l.reborrow().get(i as u32));
        }
    }
    {
        let mut l = b.reborrow().init_files(len32(m.files.len()));
        for (i, f) in m.files.iter().enumerate() {
            enc_open_file(f, l.reborrow().get(i as u32));
        }
    }
    {
        let mut l = b.reborrow().init_frames(len32(m.frames.len()));
        for (i, f) in m.frames.iter().enumerate() {
            let mut x = l.reborrow().get(i as u32);
            x.set_offset(f.offset);
            x.set_stored_size(f.stored_size);
            x.set_size(f.size);
            x.set_codec(match f.codec {
                Codec::None => c::Codec::None,
                Codec::Zstd => c::Codec::Zstd,
                Codec::Lz4 => c::Codec::Lz4,
            });
            x.set_crc32(f.crc32);
        }
    }
    b.set_root_pid(m.root_pid);
    b.set_freeze_ns(m.freeze_ns);
    b.set_generation(m.generation);
    {
        let mut l = b.reborrow().init_notes(len32(m.notes.len()));
        for (i, n) in m.notes.iter().enumerate() {
            let mut x = l.reborrow().get(i as u32);
            x.set_key(n.key.as_str());
            x.set_value(n.value.as_str());
        }
    }
    enc_image_1_2(m, b);
}

/// The fields of Image added in 1.2.
fn enc_image_1_2(m: &Image, mut b: c::image::Builder) {
    {
        let mut l = b.reborrow().init_locks(len32(m.locks.len()));
        for (i, k) in m.locks.iter().enumerate() {
            let mut x = l.reborrow().get(i as u32);
            x.set_kind(match k.kind {
                LockKind::Flock => c::LockKind::Flock,
                LockKind::Posix => c::LockKind::Posix,
                LockKind::Ofd => c::LockKind::Ofd,
                LockKind::Lease => c::LockKind::Lease,
            });
            x.set_type(match k.lock_type {
                LockType::Read => c::LockType::Read,
                LockType::Write => c::LockType::Write,
            });
            x.set_start(k.start);
            x.set_length(k.length);
            x.set_pid(k.pid);
            x.set_file(k.file);
            x.set_fd(k.fd);
        }
    }
    {
        let mut l = b
            .reborrow()
            .init_seccomp_filters(len32(m.seccomp_filters.len()));
        for (i, f) in m.seccomp_filters.iter().enumerate() {
            let mut x = l.reborrow().get(i as u32);
            x.set_parent(f.parent);
            x.set_program(&f.program);
            x.set_flags(f.flags);
        }
    }
    {
        let mut l = b.reborrow().init_sysv_shm(len32(m.sysv_shm.len()));
        for (i, o) in m.sysv_shm.iter().enumerate() {
            let mut x = l.reborrow().get(i as u32);
            enc_ipc_perm(&o.perm, x.reborrow().init_perm());
            x.set_size(o.size);
            x.set_removed(o.removed);
            enc_blob(&o.contents, x.init_contents());
        }
    }
    {
        let mut l = b.reborrow().init_sysv_sem(len32(m.sysv_sem.len()));
        for (i, o) in m.sysv_sem.iter().enumerate() {
            let mut x = l.reborrow().get(i as u32);
            enc_ipc_perm(&o.perm, x.reborrow().init_perm());
            enc_prims(&o.values, x.init_values(len32(o.values.len())));
        }
    }
    {
        let mut l = b.reborrow().init_sysv_msg(len32(m.sysv_msg.len()));
        for (i, o) in m.sysv_msg.iter().enumerate() {
            let mut x = l.reborrow().get(i as u32);
            enc_ipc_perm(&o.perm, x.reborrow().init_perm());
            x.set_qbytes(o.qbytes);
            let mut ml = x.init_messages(len32(o.messages.len()));
            for (j, msg) in o.messages.iter().enumerate() {
                let mut y = ml.reborrow().get(j as u32);
                y.set_mtype(msg.mtype);
                y.set_data(&msg.data);
            }
        }
    }
    b.set_image_id(&m.image_id);
    {
        let mut p = b.reborrow().init_parent();
        p.set_image_id(&m.parent.image_id);
        p.set_path(&m.parent.path);
        p.set_created_ns(m.parent.created_ns);
    }
    let mut l = b.init_ptys(len32(m.ptys.len()));
    for (i, p) in m.ptys.iter().enumerate() {
        enc_pty_pair(p, l.reborrow().get(i as u32));
    }
}

fn enc_pty_pair(m: &PtyPair, mut b: c::pty_pair::Builder) {
    b.set_id(m.id);
    b.set_index(m.index);
    b.set_devpts(m.devpts);
    b.set_termios(&m.termios);
    b.set_win_rows(m.win_rows);
    b.set_win_cols(m.win_cols);
    b.set_win_xpixel(m.win_xpixel);
    b.set_win_ypixel(m.win_ypixel);
    b.set_packet(m.packet);
    b.set_locked(m.locked);
    b.set_slave_exclusive(m.slave_exclusive);
    b.set_peer_closed(m.peer_closed);
    b.set_sid(m.sid);
    b.set_foreground_pgrp(m.foreground_pgrp);
    {
        let mut l = b.reborrow().init_input_lines(len32(m.input_lines.len()));
        for (i, line) in m.input_lines.iter().enumerate() {
            l.set(i as u32, line);
        }
    }
    b.set_input_pending(&m.input_pending);
    b.set_output(&m.output);
    b.set_packet_status(m.packet_status);
    b.set_slave_mode(m.slave_mode);
    b.set_slave_uid(m.slave_uid);
    b.set_slave_gid(m.slave_gid);
}

fn enc_ipc_perm(m: &IpcPerm, mut b: c::ipc_perm::Builder) {
    b.set_key(m.key);
    b.set_id(m.id);
    b.set_mode(m.mode);
    b.set_uid(m.uid);
    b.set_gid(m.gid);
    b.set_cuid(m.cuid);
    b.set_cgid(m.cgid);
}

fn enc_host(m: &HostInfo, mut b: c::host_info::Builder) {
    b.set_hostname(m.hostname.as_str());
    b.set_kernel_release(m.kernel_release.as_str());
    b.set_arch(match m.arch {
        Arch::Unknown => c::Arch::Unknown,
        Arch::X8664 => c::Arch::X8664,
        Arch::Aarch64 => c::Arch::Aarch64,
    });
    b.set_page_size(m.page_size);
    b.set_boot_id(m.boot_id.as_str());
    let mut cb = b.init_cpu();
    let cpu = &m.cpu;
    cb.set_vendor(cpu.vendor.as_str());
    cb.set_model_name(cpu.model_name.as_str());
    cb.set_family(cpu.family);
    cb.set_model(cpu.model);
    cb.set_stepping(cpu.stepping);
    cb.set_xcr0(cpu.xcr0);
    cb.set_xsave_size(cpu.xsave_size);
    enc_texts(&cpu.flags, cb.init_flags(len32(cpu.flags.len())));
}

fn enc_texts(v: &[String], mut l: text_list::Builder) {
    for (i, s) in v.iter().enumerate() {
        l.set(i as u32, s.as_str());
    }
}

fn enc_datas(v: &[Vec<u8>], mut l: data_list::Builder) {
    for (i, s) in v.iter().enumerate() {
        l.set(i as u32, s);
    }
}

fn enc_prims<T: capnp::private::layout::PrimitiveElement + Copy>(
    v: &[T],
    mut l: primitive_list::Builder<T>,
) {
    for (i, x) in v.iter().enumerate() {
        l.set(i as u32, *x);
    }
}

fn enc_identity(m: &FileIdentity, mut b: c::file_identity::Builder) {
    b.set_path(&m.path);
    b.set_dev(m.dev);
    b.set_inode(m.inode);
    b.set_size(m.size);
    b.set_mtime_ns(m.mtime_ns);
    b.set_mode(m.mode);
    b.set_deleted(m.deleted);
    b.set_uid(m.uid);
    b.set_gid(m.gid);
    b.set_ctime_ns(m.ctime_ns);
    b.set_generation(m.generation.unwrap_or(0));
    b.set_has_generation(m.generation.is_some());
    b.set_atime_ns(m.atime_ns);
    b.set_content_hash(&m.content_hash);
}

fn enc_siginfos(v: &[SigInfo], mut l: capnp::struct_list::Builder<c::sig_info::Owned>) {
    for (i, s) in v.iter().enumerate() {
        let mut x = l.reborrow().get(i as u32);
        x.set_signo(s.signo);
        x.set_code(s.code);
        x.set_raw(&s.raw);
    }
}

fn enc_process(m: &Process, mut b: c::process::Builder) {
    b.set_pid(m.pid);
    b.set_ppid(m.ppid);
    b.set_pgid(m.pgid);
    b.set_sid(m.sid);
    b.set_state(m.state.as_str());
    b.set_comm(&m.comm);
    enc_identity(&m.exe, b.reborrow().init_exe());
    enc_datas(
        &m.cmdline,
        b.reborrow().init_cmdline(len32(m.cmdline.len())),
    );
    enc_datas(
        &m.environ,
        b.reborrow().init_environ(len32(m.environ.len())),
    );
    b.set_cwd(&m.cwd);
    b.set_root(&m.root);
    b.set_umask(m.umask);
    {
        let mut l = b.reborrow().init_rlimits(len32(m.rlimits.len()));
        for (i, r) in m.rlimits.iter().enumerate() {
            let mut x = l.reborrow().get(i as u32);
            x.set_resource(r.resource);
            x.set_name(r.name.as_str());
            x.set_soft(r.soft);
            x.set_hard(r.hard);
        }
    }
    enc_creds(&m.creds, b.reborrow().init_creds());
    b.set_personality(m.personality);
    enc_process_rest(m, b);
}

fn enc_creds(cr: &Credentials, mut x: c::credentials::Builder) {
    {
        x.set_ruid(cr.ruid);
        x.set_euid(cr.euid);
        x.set_suid(cr.suid);
        x.set_fsuid(cr.fsuid);
        x.set_rgid(cr.rgid);
        x.set_egid(cr.egid);
        x.set_sgid(cr.sgid);
        x.set_fsgid(cr.fsgid);
        x.set_cap_inheritable(cr.cap_inheritable);
        x.set_cap_permitted(cr.cap_permitted);
        x.set_cap_effective(cr.cap_effective);
        x.set_cap_bounding(cr.cap_bounding);
        x.set_cap_ambient(cr.cap_ambient);
        x.set_securebits(cr.securebits);
        x.set_no_new_privs(cr.no_new_privs);
        x.set_seccomp_mode(cr.seccomp_mode);
        enc_prims(&cr.groups, x.init_groups(len32(cr.groups.len())));
    }
}

fn enc_process_rest(m: &Process, mut b: c::process::Builder) {
    enc_mm(&m.mm, b.reborrow().init_mm());
    {
        let mut l = b.reborrow().init_vmas(len32(m.vmas.len()));
        for (i, v) in m.vmas.iter().enumerate() {
            enc_vma(v, l.reborrow().get(i as u32));
        }
    }
    enc_memory(&m.memory, b.reborrow().init_memory(len32(m.memory.len())));
    {
        let mut l = b.reborrow().init_sigactions(len32(m.sigactions.len()));
        for (i, s) in m.sigactions.iter().enumerate() {
            let mut x = l.reborrow().get(i as u32);
            x.set_handler(s.handler);
            x.set_flags(s.flags);
            x.set_restorer(s.restorer);
            x.set_mask(s.mask);
        }
    }
    enc_siginfos(
        &m.shared_pending,
        b.reborrow()
            .init_shared_pending(len32(m.shared_pending.len())),
    );
    enc_timers(m, b.reborrow());
    {
        let mut l = b.reborrow().init_fds(len32(m.fds.len()));
        for (i, f) in m.fds.iter().enumerate() {
            let mut x = l.reborrow().get(i as u32);
            x.set_fd(f.fd);
            x.set_cloexec(f.cloexec);
            x.set_file(f.file);
        }
    }
    {
        let mut l = b.reborrow().init_threads(len32(m.threads.len()));
        for (i, t) in m.threads.iter().enumerate() {
            enc_thread(t, l.reborrow().get(i as u32));
        }
    }
    enc_prims(
        &m.children,
        b.reborrow().init_children(len32(m.children.len())),
    );
    b.set_oom_score_adj(m.oom_score_adj);
    b.set_dumpable(m.dumpable);
    b.set_child_subreaper(m.child_subreaper);
    b.set_parent_death_signal(m.parent_death_signal);
    b.set_exit_signal(m.exit_signal);
    b.set_login_uid(m.login_uid);
    b.set_timer_slack_ns(m.timer_slack_ns);
    b.set_thp_disabled(m.thp_disabled);
    b.set_exit_status(m.exit_status);
    {
        let mut x = b.reborrow().init_shares();
        x.set_files(m.shares.files);
        x.set_fs(m.shares.fs);
        x.set_sighand(m.shares.sighand);
        x.set_vm(m.shares.vm);
        x.set_sysvsem(m.shares.sysvsem);
    }
    b.set_cgroup(&m.cgroup);
    b.set_membarrier(m.membarrier);
    b.set_mdwe(m.mdwe);
    b.set_coredump_filter(m.coredump_filter);
    enc_identity(&m.cwd_identity, b.reborrow().init_cwd_identity());
    b.set_controlling_tty(m.controlling_tty);
    b.set_ckpt_uffd_fd(m.ckpt_uffd_fd.unwrap_or(-1));
    b.set_stop_signal(m.stop_signal);
    enc_cgroup_paths(
        &m.cgroups_v1,
        b.reborrow().init_cgroups_v1(len32(m.cgroups_v1.len())),
    );
    let mut dirs = b.reborrow().init_cgroup_dirs(len32(m.cgroup_dirs.len()));
    for (i, d) in m.cgroup_dirs.iter().enumerate() {
        enc_cgroup_dir(d, dirs.reborrow().get(len32(i)));
    }
    enc_cgroup_paths(
        &m.cgroup_ns_roots,
        b.init_cgroup_ns_roots(len32(m.cgroup_ns_roots.len())),
    );
}

fn enc_cgroup_paths(v: &[CgroupPath], mut l: capnp::struct_list::Builder<c::cgroup_path::Owned>) {
    for (i, x) in v.iter().enumerate() {
        let mut e = l.reborrow().get(len32(i));
        e.set_hierarchy(x.hierarchy.as_str());
        e.set_path(&x.path);
    }
}

fn enc_cgroup_dir(d: &CgroupDir, mut b: c::cgroup_dir::Builder) {
    {
        let mut p = b.reborrow().init_dir();
        p.set_hierarchy(d.dir.hierarchy.as_str());
        p.set_path(&d.dir.path);
    }
    b.set_mode(d.mode);
    b.set_uid(d.uid);
    b.set_gid(d.gid);
    let mut l = b.init_files(len32(d.files.len()));
    for (i, f) in d.files.iter().enumerate() {
        let mut e = l.reborrow().get(len32(i));
        e.set_name(f.name.as_str());
        if let Some(v) = &f.value {
            e.set_value(v);
        }
        e.set_has_value(f.value.is_some());
        e.set_mode(f.mode);
        e.set_uid(f.uid);
        e.set_gid(f.gid);
    }
}

fn enc_mm(mm: &MmLayout, mut x: c::mm_layout::Builder) {
    x.set_start_code(mm.start_code);
    x.set_end_code(mm.end_code);
    x.set_start_data(mm.start_data);
    x.set_end_data(mm.end_data);
    x.set_start_brk(mm.start_brk);
    x.set_brk(mm.brk);
    x.set_start_stack(mm.start_stack);
    x.set_arg_start(mm.arg_start);
    x.set_arg_end(mm.arg_end);
    x.set_env_start(mm.env_start);
    x.set_env_end(mm.env_end);
    let mut l = x.init_auxv(len32(mm.auxv.len()));
    for (i, (k, v)) in mm.auxv.iter().enumerate() {
        let mut e = l.reborrow().get(i as u32);
        e.set_key(*k);
        e.set_value(*v);
    }
}

fn enc_memory(runs: &[MemoryRun], mut l: capnp::struct_list::Builder<c::memory_run::Owned>) {
    for (i, r) in runs.iter().enumerate() {
        let mut x = l.reborrow().get(i as u32);
        x.set_start(r.start);
        x.set_pages(r.pages);
        x.set_kind(match r.kind {
            RunKind::Data => c::RunKind::Data,
            RunKind::Zero => c::RunKind::Zero,
            RunKind::Guard => c::RunKind::Guard,
            RunKind::Parent => c::RunKind::Parent,
        });
        x.set_frame(r.frame);
        x.set_frame_offset(r.frame_offset);
    }
}

/// The interval timers and POSIX timers of a process.
fn enc_timers(m: &Process, mut b: c::process::Builder) {
    {
        let mut l = b.reborrow().init_itimers(len32(m.itimers.len()));
        for (i, t) in m.itimers.iter().enumerate() {
            let mut x = l.reborrow().get(i as u32);
            x.set_which(t.which);
            x.set_interval_ns(t.interval_ns);
            x.set_value_ns(t.value_ns);
        }
    }
    {
        let mut l = b.reborrow().init_posix_timers(len32(m.posix_timers.len()));
        for (i, t) in m.posix_timers.iter().enumerate() {
            let mut x = l.reborrow().get(i as u32);
            x.set_id(t.id);
            x.set_clock(t.clock);
            x.set_notify(t.notify);
            x.set_signo(t.signo);
            x.set_value(t.value);
            x.set_notify_tid(t.notify_tid);
            x.set_interval_ns(t.interval_ns);
            x.set_value_ns(t.value_ns);
            x.set_overrun(t.overrun);
        }
    }
}

fn enc_thread(m: &Thread, mut b: c::thread::Builder) {
    b.set_tid(m.tid);
    b.set_comm(&m.comm);
    b.set_state(m.state.as_str());
    {
        let mut r = b.reborrow().init_regs();
        match &m.regs {
            Registers::None => r.set_none(()),
            Registers::X8664(x) => {
                let mut g = r.init_x8664();
                g.set_r15(x.r15);
                g.set_r14(x.r14);
                g.set_r13(x.r13);
                g.set_r12(x.r12);
                g.set_rbp(x.rbp);
                g.set_rbx(x.rbx);
                g.set_r11(x.r11);
                g.set_r10(x.r10);
                g.set_r9(x.r9);
                g.set_r8(x.r8);
                g.set_rax(x.rax);
                g.set_rcx(x.rcx);
                g.set_rdx(x.rdx);
                g.set_rsi(x.rsi);
                g.set_rdi(x.rdi);
                g.set_orig_rax(x.orig_rax);
                g.set_rip(x.rip);
                g.set_cs(x.cs);
                g.set_eflags(x.eflags);
                g.set_rsp(x.rsp);
                g.set_ss(x.ss);
                g.set_fs_base(x.fs_base);
                g.set_gs_base(x.gs_base);
                g.set_ds(x.ds);
                g.set_es(x.es);
                g.set_fs(x.fs);
                g.set_gs(x.gs);
                g.set_xsave(&x.xsave);
                g.set_xfeatures(x.xfeatures);
            }
        }
    }
    b.set_blocked(m.blocked);
    enc_siginfos(
        &m.pending,
        b.reborrow().init_pending(len32(m.pending.len())),
    );
    {
        let mut x = b.reborrow().init_altstack();
        x.set_sp(m.altstack.sp);
        x.set_size(m.altstack.size);
        x.set_flags(m.altstack.flags);
    }
    b.set_clear_child_tid(m.clear_child_tid);
    {
        let mut x = b.reborrow().init_robust_list();
        x.set_head(m.robust_list.head);
        x.set_len(m.robust_list.len);
    }
    {
        let mut x = b.reborrow().init_rseq();
        x.set_address(m.rseq.address);
        x.set_length(m.rseq.length);
        x.set_signature(m.rseq.signature);
        x.set_flags(m.rseq.flags);
    }
    {
        let mut x = b.reborrow().init_sched();
        x.set_policy(m.sched.policy);
        x.set_priority(m.sched.priority);
        x.set_nice(m.sched.nice);
        x.set_ioprio(m.sched.ioprio);
    }
    enc_prims(
        &m.cpu_affinity,
        b.reborrow().init_cpu_affinity(len32(m.cpu_affinity.len())),
    );
    if let Some(cr) = &m.creds {
        enc_creds(cr, b.reborrow().init_creds());
    }
    b.set_has_creds(m.creds.is_some());
    b.set_seccomp_filter(m.seccomp_filter);
    enc_cgroup_paths(&m.cgroups_v1, b.init_cgroups_v1(len32(m.cgroups_v1.len())));
}

fn enc_vma(m: &Vma, mut b: c::vma::Builder) {
    b.set_start(m.start);
    b.set_end(m.end);
    b.set_prot(m.prot);
    b.set_shared(m.shared);
    b.set_grows_down(m.grows_down);
    b.set_madvise(m.madvise);
    b.set_name(&m.name);
    b.set_huge_page_size(m.huge_page_size);
    enc_texts(
        &m.vm_flags,
        b.reborrow().init_vm_flags(len32(m.vm_flags.len())),
    );
    let mut bk = b.init_backing();
    match &m.backing {
        VmaBacking::Anonymous => bk.set_anonymous(()),
        VmaBacking::File(f) => {
            let mut x = bk.init_file();
            x.set_offset(f.offset);
            x.set_has_contents(f.has_contents);
            enc_blob(&f.contents, x.reborrow().init_contents());
            enc_identity(&f.file, x.init_file());
        }
        VmaBacking::SharedMemory(s) => {
            let mut x = bk.init_shared_memory();
            x.set_kind(match s.kind {
                ShmKind::AnonymousShared => c::ShmKind::AnonymousShared,
                ShmKind::Memfd => c::ShmKind::Memfd,
                ShmKind::SysvShm => c::ShmKind::SysvShm,
                ShmKind::PosixShm => c::ShmKind::PosixShm,
            });
            x.set_id(s.id);
            x.set_offset(s.offset);
            x.set_size(s.size);
            x.set_name(&s.name);
        }
        VmaBacking::Special(s) => bk.set_special(match s {
            SpecialMapping::Heap => c::SpecialMapping::Heap,
            SpecialMapping::Stack => c::SpecialMapping::Stack,
            SpecialMapping::Vdso => c::SpecialMapping::Vdso,
            SpecialMapping::Vvar => c::SpecialMapping::Vvar,
            SpecialMapping::VvarVclock => c::SpecialMapping::VvarVclock,
            SpecialMapping::Vsyscall => c::SpecialMapping::Vsyscall,
            SpecialMapping::Uprobes => c::SpecialMapping::Uprobes,
            SpecialMapping::Other => c::SpecialMapping::Other,
        }),
        VmaBacking::AioRing(a) => {
            let mut x = bk.init_aio_ring();
            x.set_nr(a.nr);
            x.set_head(a.head);
            x.set_tail(a.tail);
        }
        VmaBacking::PacketRing => bk.set_packet_ring(()),
    }
}

fn enc_blob(m: &Blob, mut b: c::blob::Builder) {
    b.set_size(m.size);
    enc_prims(&m.frames, b.init_frames(len32(m.frames.len())));
}

fn enc_pipe(m: &Pipe, mut b: c::pipe::Builder) {
    b.set_id(m.id);
    b.set_end(match m.end {
        PipeEnd::Read => c::PipeEnd::Read,
        PipeEnd::Write => c::PipeEnd::Write,
    });
    b.set_data(&m.data);
    b.set_capacity(m.capacity);
    b.set_fifo_path(&m.fifo_path);
    b.set_peer_closed(m.peer_closed);
    enc_identity(&m.fifo, b.init_fifo());
}

fn enc_open_file(m: &OpenFile, mut b: c::open_file::Builder) {
    b.set_id(m.id);
    b.set_flags(m.flags);
    b.set_position(m.position);
    b.set_path(&m.path);
    {
        let mut o = b.reborrow().init_owner();
        o.set_pid(m.owner.pid);
        o.set_kind(m.owner.kind);
        o.set_signal(m.owner.signal);
    }
    let mut k = b.init_kind();
    match &m.kind {
        FileKind::Regular(r) => enc_regular(r, k.init_regular()),
        FileKind::Directory(d) => enc_identity(d, k.init_directory()),
        FileKind::Pipe(p) => enc_pipe(p, k.init_pipe()),
        FileKind::Fifo(p) => enc_pipe(p, k.init_fifo()),
        FileKind::UnixSocket(u) => enc_unix(u, k.init_unix_socket()),
        FileKind::InetSocket(s) => enc_inet(s, k.init_inet_socket()),
        FileKind::Tty(t) => enc_tty(t, k.init_tty()),
        FileKind::EventFd(e) => {
            let mut x = k.init_eventfd();
            x.set_count(e.count);
            x.set_semaphore(e.semaphore);
        }
        FileKind::Epoll(e) => enc_epoll(e, k.init_epoll()),
        FileKind::TimerFd(t) => enc_timerfd(t, k.init_timerfd()),
        FileKind::SignalFd(s) => k.init_signalfd().set_mask(s.mask),
        FileKind::Inotify(n) => enc_inotify(n, k.init_inotify()),
        FileKind::MemFd(mf) => enc_memfd(mf, k.init_memfd()),
        FileKind::CharDevice(d) => {
            let mut x = k.init_char_device();
            x.set_rdev(d.rdev);
            x.set_path(&d.path);
            enc_identity(&d.file, x.init_file());
        }
        FileKind::Other(s) => k.set_other(s.as_str()),
        FileKind::Pidfd(p) => {
            let mut x = k.init_pidfd();
            x.set_pid(p.pid);
            x.set_dead(p.dead);
            x.set_thread(p.thread);
            x.set_inode(p.inode);
        }
        FileKind::Fanotify(f) => enc_fanotify(f, k.init_fanotify()),
        FileKind::OPath(o) => {
            let mut x = k.init_opath();
            x.set_symlink(o.symlink);
            if !o.target.is_empty() {
                x.set_target(&o.target);
            }
            enc_identity(&o.file, x.init_file());
        }
        FileKind::Nsfs(n) => {
            let mut x = k.init_nsfs();
            x.set_kind(n.kind.as_str());
            x.set_inode(n.inode);
            x.set_pid(n.pid);
        }
        FileKind::NetlinkSocket(n) => enc_netlink(n, k.init_netlink_socket()),
        FileKind::PacketSocket(p) => enc_packet(p, k.init_packet_socket()),
        FileKind::BpfMap(m) => enc_bpf_map(m, k.init_bpf_map()),
    }
}

fn enc_bpf_map(m: &BpfMap, mut x: c::bpf_map::Builder) {
    x.set_map_type(m.map_type);
    x.set_key_size(m.key_size);
    x.set_value_size(m.value_size);
    x.set_max_entries(m.max_entries);
    x.set_map_flags(m.map_flags);
    x.set_name(&m.name);
    x.set_frozen(m.frozen);
    x.set_map_extra(m.map_extra);
    x.set_keys(&m.keys);
    x.set_values(&m.values);
}

fn enc_regular(r: &RegularFile, mut x: c::regular_file::Builder) {
    x.set_has_contents(r.has_contents);
    enc_identity(&r.file, x.reborrow().init_file());
    enc_blob(&r.contents, x.reborrow().init_contents());
    let mut l = x.init_extents(len32(r.extents.len()));
    for (i, e) in r.extents.iter().enumerate() {
        let mut y = l.reborrow().get(i as u32);
        y.set_offset(e.offset);
        y.set_length(e.length);
    }
}

fn enc_unix(u: &UnixSocket, mut x: c::unix_socket::Builder) {
    x.set_inode(u.inode);
    x.set_type(u.sock_type);
    x.set_state(u.state);
    x.set_local_path(&u.local_path);
    x.set_peer_path(&u.peer_path);
    x.set_peer_inode(u.peer_inode);
    x.set_listening(u.listening);
    x.set_backlog(u.backlog);
    x.set_queued(&u.queued);
    x.set_shutdown(u.shutdown);
    enc_unix_1_2(u, x);
}

fn enc_tty(t: &Tty, mut x: c::tty::Builder) {
    x.set_index(t.index);
    x.set_is_controller(t.is_controller);
    x.set_termios(&t.termios);
    x.set_win_rows(t.win_rows);
    x.set_win_cols(t.win_cols);
    x.set_foreground_pgrp(t.foreground_pgrp);
    x.set_rdev(t.rdev);
    x.set_role(match t.role {
        TtyRole::Unknown => c::TtyRole::Unknown,
        TtyRole::Slave => c::TtyRole::Slave,
        TtyRole::Master => c::TtyRole::Master,
        TtyRole::DevTty => c::TtyRole::DevTty,
        TtyRole::Console => c::TtyRole::Console,
        TtyRole::Vt => c::TtyRole::Vt,
        TtyRole::Serial => c::TtyRole::Serial,
    });
    x.set_real_rdev(t.real_rdev);
    x.set_pair(t.pair);
    x.set_devpts(t.devpts);
    x.set_win_xpixel(t.win_xpixel);
    x.set_win_ypixel(t.win_ypixel);
    x.set_sid(t.sid);
    x.set_hung_up(t.hung_up);
}

fn enc_epoll(e: &Epoll, x: c::epoll::Builder) {
    let mut l = x.init_targets(len32(e.targets.len()));
    for (i, t) in e.targets.iter().enumerate() {
        let mut y = l.reborrow().get(i as u32);
        y.set_fd(t.fd);
        y.set_file(t.file);
        y.set_events(t.events);
        y.set_data(t.data);
    }
}

fn enc_timerfd(t: &TimerFd, mut x: c::timer_fd::Builder) {
    x.set_clock(t.clock);
    x.set_interval_ns(t.interval_ns);
    x.set_value_ns(t.value_ns);
    x.set_ticks(t.ticks);
    x.set_settime_flags(t.settime_flags);
    x.set_expiry_ns(t.expiry_ns);
}

fn enc_inotify(n: &Inotify, x: c::inotify::Builder) {
    let mut l = x.init_watches(len32(n.watches.len()));
    for (i, w) in n.watches.iter().enumerate() {
        let mut y = l.reborrow().get(i as u32);
        y.set_wd(w.wd);
        y.set_mask(w.mask);
        y.set_path(&w.path);
        y.set_inode(w.inode);
        y.set_dev(w.dev);
    }
}

fn enc_memfd(mf: &MemFd, mut x: c::mem_fd::Builder) {
    x.set_name(&mf.name);
    x.set_id(mf.id);
    x.set_size(mf.size);
    x.set_seals(mf.seals);
    x.set_mode(mf.mode);
    x.set_huge_page_size(mf.huge_page_size);
    enc_blob(&mf.contents, x.init_contents());
}

fn enc_fanotify(f: &Fanotify, mut x: c::fanotify::Builder) {
    x.set_init_flags(f.init_flags);
    x.set_event_flags(f.event_flags);
    let mut l = x.init_marks(len32(f.marks.len()));
    for (i, mk) in f.marks.iter().enumerate() {
        let mut y = l.reborrow().get(i as u32);
        y.set_type(mk.mark_type);
        y.set_mask(mk.mask);
        y.set_ignored_mask(mk.ignored_mask);
        y.set_flags(mk.flags);
        y.set_path(&mk.path);
        y.set_dev(mk.dev);
        y.set_inode(mk.inode);
    }
}

fn enc_sockopts(opts: &[SockOpt], mut l: capnp::struct_list::Builder<c::sock_opt::Owned>) {
    for (i, o) in opts.iter().enumerate() {
        let mut e = l.reborrow().get(i as u32);
        e.set_level(o.level);
        e.set_name(o.name);
        e.set_value(&o.value);
    }
}

fn enc_unix_1_2(u: &UnixSocket, mut x: c::unix_socket::Builder) {
    x.set_file_mode(u.file_mode);
    x.set_file_uid(u.file_uid);
    x.set_file_gid(u.file_gid);
    x.set_deleted(u.deleted);
    x.set_external(match u.external {
        UnixExternal::None => c::UnixExternal::None,
        UnixExternal::Reconnect => c::UnixExternal::Reconnect,
        UnixExternal::Close => c::UnixExternal::Close,
    });
    {
        let mut l = x.reborrow().init_pending(len32(u.pending.len()));
        for (i, p) in u.pending.iter().enumerate() {
            l.set(i as u32, *p);
        }
    }
    enc_sockopts(
        &u.options,
        x.reborrow().init_options(len32(u.options.len())),
    );
    let mut l = x.init_messages(len32(u.messages.len()));
    for (i, m) in u.messages.iter().enumerate() {
        let mut y = l.reborrow().get(i as u32);
        y.set_data(&m.data);
        y.set_has_creds(m.has_creds);
        y.set_pid(m.pid);
        y.set_uid(m.uid);
        y.set_gid(m.gid);
        y.set_sender(&m.sender);
        let mut f = y.init_files(len32(m.files.len()));
        for (j, id) in m.files.iter().enumerate() {
            f.set(j as u32, *id);
        }
    }
}

fn enc_inet(s: &InetSocket, mut x: c::inet_socket::Builder) {
    x.set_family(s.family);
    x.set_type(s.sock_type);
    x.set_protocol(s.protocol);
    x.set_state(s.state);
    x.set_local_addr(&s.local_addr);
    x.set_local_port(s.local_port);
    x.set_remote_addr(&s.remote_addr);
    x.set_remote_port(s.remote_port);
    x.set_backlog(s.backlog);
    enc_sockopts(
        &s.options,
        x.reborrow().init_options(len32(s.options.len())),
    );
    x.set_shutdown(s.shutdown);
    x.set_lock_tag(s.lock_tag.as_str());
    x.set_closed(s.closed);
    x.set_dropped_queue(s.dropped_queue);
    x.set_has_tcp(s.tcp.is_some());
    if let Some(t) = &s.tcp {
        enc_tcp(t, x.reborrow().init_tcp());
    }
    {
        let mut l = x.reborrow().init_datagrams(len32(s.datagrams.len()));
        for (i, d) in s.datagrams.iter().enumerate() {
            let mut y = l.reborrow().get(i as u32);
            y.set_src_addr(&d.src_addr);
            y.set_src_port(d.src_port);
            y.set_dst_addr(&d.dst_addr);
            y.set_data(&d.data);
        }
    }
    let mut l = x.init_pending(len32(s.pending.len()));
    for (i, p) in s.pending.iter().enumerate() {
        enc_inet(p, l.reborrow().get(i as u32));
    }
}

fn enc_tcp(t: &TcpConnection, mut x: c::tcp_connection::Builder) {
    x.set_send_seq(t.send_seq);
    x.set_recv_seq(t.recv_seq);
    enc_blob(&t.send_queue, x.reborrow().init_send_queue());
    x.set_unsent(t.unsent);
    enc_blob(&t.recv_queue, x.reborrow().init_recv_queue());
    x.set_mss_clamp(t.mss_clamp);
    x.set_snd_wscale(t.snd_wscale);
    x.set_rcv_wscale(t.rcv_wscale);
    x.set_wscale(t.wscale);
    x.set_sack(t.sack);
    x.set_timestamps(t.timestamps);
    x.set_ts_clock(t.ts_clock);
    x.set_has_window(t.window.is_some());
    if let Some(w) = &t.window {
        x.set_snd_wl1(w.snd_wl1);
        x.set_snd_wnd(w.snd_wnd);
        x.set_max_window(w.max_window);
        x.set_rcv_wnd(w.rcv_wnd);
        x.set_rcv_wup(w.rcv_wup);
    }
}

fn enc_netlink(n: &NetlinkSocket, mut x: c::netlink_socket::Builder) {
    x.set_protocol(n.protocol);
    x.set_type(n.sock_type);
    x.set_port_id(n.port_id);
    x.set_dst_port_id(n.dst_port_id);
    x.set_dst_group(n.dst_group);
    x.set_dropped_queue(n.dropped_queue);
    enc_sockopts(
        &n.options,
        x.reborrow().init_options(len32(n.options.len())),
    );
    let mut l = x.init_groups(len32(n.groups.len()));
    for (i, g) in n.groups.iter().enumerate() {
        l.set(i as u32, *g);
    }
}

fn enc_packet(p: &PacketSocket, mut x: c::packet_socket::Builder) {
    if let Some(r) = &p.rx_ring {
        enc_packet_ring(r, x.reborrow().init_rx_ring());
    }
    if let Some(r) = &p.tx_ring {
        enc_packet_ring(r, x.reborrow().init_tx_ring());
    }
    x.set_type(p.sock_type);
    x.set_protocol(p.protocol);
    x.set_ifindex(p.ifindex);
    x.set_version(p.version);
    x.set_fanout(p.fanout);
    x.set_dropped_queue(p.dropped_queue);
    enc_sockopts(
        &p.options,
        x.reborrow().init_options(len32(p.options.len())),
    );
    let mut l = x.init_memberships(len32(p.memberships.len()));
    for (i, m) in p.memberships.iter().enumerate() {
        let mut y = l.reborrow().get(i as u32);
        y.set_ifindex(m.ifindex);
        y.set_type(m.mr_type);
        y.set_address(&m.address);
    }
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// Decode and convert a metadata message (no semantic validation: see
/// `crate::validate`).
pub fn decode(bytes: &[u8]) -> Result<Image> {
    // The payload is exactly one message: whole words, nothing after it
    // (spec/format.md, section 3).
    if bytes.len() % 8 != 0 {
        return Err(Error::Invalid(format!(
            "the metadata payload is {} bytes, not a whole number of 8-byte words",
            bytes.len()
        )));
    }
    let mut slice = bytes;
    let msg = serialize::read_message_from_flat_slice(&mut slice, reader_options(bytes.len()))
        .map_err(|e| capnp_err("metadata message framing", e))?;
    if !slice.is_empty() {
        return Err(Error::Invalid(format!(
            "{} bytes follow the metadata message in its record",
            slice.len()
        )));
    }
    let root: c::image::Reader = msg.get_root().map_err(|e| capnp_err("metadata root", e))?;
    dec_image(root)
}

pub(crate) fn capnp_err(context: impl Into<String>, source: capnp::Error) -> Error {
    Error::Metadata {
        context: context.into(),
        source,
    }
}

/// Context helper: map a capnp error to [`Error::Metadata`] naming `what`.
trait Ctx<T> {
    fn ctx(self, what: &dyn Fn() -> String) -> Result<T>;
}
impl<T> Ctx<T> for capnp::Result<T> {
    fn ctx(self, what: &dyn Fn() -> String) -> Result<T> {
        self.map_err(|e| capnp_err(what(), e))
    }
}

fn text(r: capnp::Result<capnp::text::Reader>, what: &dyn Fn() -> String) -> Result<String> {
    let t = r.ctx(what)?;
    Ok(String::from_utf8_lossy(t.as_bytes()).into_owned())
}

fn data(r: capnp::Result<capnp::data::Reader>, what: &dyn Fn() -> String) -> Result<Vec<u8>> {
    Ok(r.ctx(what)?.to_vec())
}

fn texts(r: capnp::Result<text_list::Reader>, what: &dyn Fn() -> String) -> Result<Vec<String>> {
    let l = r.ctx(what)?;
    let mut v = Vec::with_capacity(l.len() as usize);
    for t in l.iter() {
        v.push(String::from_utf8_lossy(t.ctx(what)?.as_bytes()).into_owned());
    }
    Ok(v)
}

fn datas(r: capnp::Result<data_list::Reader>, what: &dyn Fn() -> String) -> Result<Vec<Vec<u8>>> {
    let l = r.ctx(what)?;
    let mut v = Vec::with_capacity(l.len() as usize);
    for t in l.iter() {
        v.push(t.ctx(what)?.to_vec());
    }
    Ok(v)
}

fn prims<T: capnp::private::layout::PrimitiveElement + Copy>(
    r: capnp::Result<primitive_list::Reader<T>>,
    what: &dyn Fn() -> String,
) -> Result<Vec<T>> {
    Ok(r.ctx(what)?.iter().collect())
}

fn bad_enum(what: String, e: capnp::NotInSchema) -> Error {
    Error::Invalid(format!("{what}: unknown enumerant {}", e.0))
}

fn dec_image(r: c::image::Reader) -> Result<Image> {
    let s = |x: &'static str| move || x.to_string();
    let mut m = Image {
        format_major: r.get_format_major(),
        format_minor: r.get_format_minor(),
        tool_version: text(r.get_tool_version(), &s("Image.toolVersion"))?,
        created_ns: r.get_created_ns(),
        host: dec_host(r.get_host().ctx(&s("Image.host"))?)?,
        root_pid: r.get_root_pid(),
        freeze_ns: r.get_freeze_ns(),
        generation: r.get_generation(),
        ..Default::default()
    };
    for (i, p) in r
        .get_processes()
        .ctx(&s("Image.processes"))?
        .iter()
        .enumerate()
    {
        m.processes.push(dec_process(p, i)?);
    }
    for (i, f) in r.get_files().ctx(&s("Image.files"))?.iter().enumerate() {
        m.files.push(dec_open_file(f, i)?);
    }
    for (i, f) in r.get_frames().ctx(&s("Image.frames"))?.iter().enumerate() {
        m.frames.push(Frame {
            offset: f.get_offset(),
            stored_size: f.get_stored_size(),
            size: f.get_size(),
            codec: match f.get_codec() {
                Ok(c::Codec::None) => Codec::None,
                Ok(c::Codec::Zstd) => Codec::Zstd,
                Ok(c::Codec::Lz4) => Codec::Lz4,
                Err(e) => return Err(bad_enum(format!("frames[{i}].codec"), e)),
            },
            crc32: f.get_crc32(),
        });
    }
    for n in r.get_notes().ctx(&s("Image.notes"))?.iter() {
        m.notes.push(Note {
            key: text(n.get_key(), &s("Note.key"))?,
            value: text(n.get_value(), &s("Note.value"))?,
        });
    }
    dec_image_1_2(r, &mut m)?;
    Ok(m)
}

/// The fields of Image added in 1.2 (empty in older images).
fn dec_image_1_2(r: c::image::Reader, m: &mut Image) -> Result<()> {
    for (i, k) in r
        .get_locks()
        .ctx(&|| "Image.locks".into())?
        .iter()
        .enumerate()
    {
        let w = || format!("locks[{i}]");
        m.locks.push(FileLock {
            kind: match k.get_kind() {
                Ok(c::LockKind::Flock) => LockKind::Flock,
                Ok(c::LockKind::Posix) => LockKind::Posix,
                Ok(c::LockKind::Ofd) => LockKind::Ofd,
                Ok(c::LockKind::Lease) => LockKind::Lease,
                Err(e) => return Err(bad_enum(format!("{}.kind", w()), e)),
            },
            lock_type: match k.get_type() {
                Ok(c::LockType::Read) => LockType::Read,
                Ok(c::LockType::Write) => LockType::Write,
                Err(e) => return Err(bad_enum(format!("{}.type", w()), e)),
            },
            start: k.get_start(),
            length: k.get_length(),
            pid: k.get_pid(),
            file: k.get_file(),
            fd: k.get_fd(),
        });
    }
    let sf = r
        .get_seccomp_filters()
        .ctx(&|| "Image.seccompFilters".into())?;
    for (i, f) in sf.iter().enumerate() {
        m.seccomp_filters.push(SeccompFilter {
            parent: f.get_parent(),
            program: data(f.get_program(), &|| format!("seccompFilters[{i}].program"))?,
            flags: f.get_flags(),
        });
    }
    for (i, o) in r
        .get_sysv_shm()
        .ctx(&|| "Image.sysvShm".into())?
        .iter()
        .enumerate()
    {
        let w = move || format!("sysvShm[{i}]");
        m.sysv_shm.push(SysvShm {
            perm: dec_ipc_perm(o.get_perm().ctx(&w)?),
            size: o.get_size(),
            contents: dec_blob(o.get_contents().ctx(&w)?, &w)?,
            removed: o.get_removed(),
        });
    }
    for (i, o) in r
        .get_sysv_sem()
        .ctx(&|| "Image.sysvSem".into())?
        .iter()
        .enumerate()
    {
        let w = move || format!("sysvSem[{i}]");
        m.sysv_sem.push(SysvSem {
            perm: dec_ipc_perm(o.get_perm().ctx(&w)?),
            values: prims(o.get_values(), &w)?,
        });
    }
    for (i, o) in r
        .get_sysv_msg()
        .ctx(&|| "Image.sysvMsg".into())?
        .iter()
        .enumerate()
    {
        let w = move || format!("sysvMsg[{i}]");
        let mut messages = Vec::new();
        for x in o.get_messages().ctx(&w)?.iter() {
            messages.push(SysvMsg {
                mtype: x.get_mtype(),
                data: data(x.get_data(), &w)?,
            });
        }
        m.sysv_msg.push(SysvMsgQueue {
            perm: dec_ipc_perm(o.get_perm().ctx(&w)?),
            qbytes: o.get_qbytes(),
            messages,
        });
    }
    m.image_id = data(r.get_image_id(), &|| "Image.imageId".into())?;
    let p = r.get_parent().ctx(&|| "Image.parent".into())?;
    m.parent = ParentRef {
        image_id: data(p.get_image_id(), &|| "Image.parent.imageId".into())?,
        path: data(p.get_path(), &|| "Image.parent.path".into())?,
        created_ns: p.get_created_ns(),
    };
    for (i, p) in r
        .get_ptys()
        .ctx(&|| "Image.ptys".into())?
        .iter()
        .enumerate()
    {
        m.ptys.push(dec_pty_pair(p, &move || format!("ptys[{i}]"))?);
    }
    Ok(())
}

fn dec_pty_pair(r: c::pty_pair::Reader, w: &dyn Fn() -> String) -> Result<PtyPair> {
    let mut input_lines = Vec::new();
    for l in r.get_input_lines().ctx(w)?.iter() {
        input_lines.push(data(l, w)?);
    }
    Ok(PtyPair {
        id: r.get_id(),
        index: r.get_index(),
        devpts: r.get_devpts(),
        termios: data(r.get_termios(), w)?,
        win_rows: r.get_win_rows(),
        win_cols: r.get_win_cols(),
        win_xpixel: r.get_win_xpixel(),
        win_ypixel: r.get_win_ypixel(),
        packet: r.get_packet(),
        locked: r.get_locked(),
        slave_exclusive: r.get_slave_exclusive(),
        peer_closed: r.get_peer_closed(),
        sid: r.get_sid(),
        foreground_pgrp: r.get_foreground_pgrp(),
        input_lines,
        input_pending: data(r.get_input_pending(), w)?,
        output: data(r.get_output(), w)?,
        packet_status: r.get_packet_status(),
        slave_mode: r.get_slave_mode(),
        slave_uid: r.get_slave_uid(),
        slave_gid: r.get_slave_gid(),
    })
}

fn dec_ipc_perm(r: c::ipc_perm::Reader) -> IpcPerm {
    IpcPerm {
        key: r.get_key(),
        id: r.get_id(),
        mode: r.get_mode(),
        uid: r.get_uid(),
        gid: r.get_gid(),
        cuid: r.get_cuid(),
        cgid: r.get_cgid(),
    }
}

fn dec_host(r: c::host_info::Reader) -> Result<HostInfo> {
    let s = |x: &'static str| move || x.to_string();
    let cpu = r.get_cpu().ctx(&s("HostInfo.cpu"))?;
    Ok(HostInfo {
        hostname: text(r.get_hostname(), &s("HostInfo.hostname"))?,
        kernel_release: text(r.get_kernel_release(), &s("HostInfo.kernelRelease"))?,
        arch: match r.get_arch() {
            Ok(c::Arch::X8664) => Arch::X8664,
            Ok(c::Arch::Aarch64) => Arch::Aarch64,
            // an architecture added by a newer minor: unknown to this reader
            Ok(c::Arch::Unknown) | Err(_) => Arch::Unknown,
        },
        page_size: r.get_page_size(),
        boot_id: text(r.get_boot_id(), &s("HostInfo.bootId"))?,
        cpu: CpuInfo {
            vendor: text(cpu.get_vendor(), &s("CpuInfo.vendor"))?,
            model_name: text(cpu.get_model_name(), &s("CpuInfo.modelName"))?,
            family: cpu.get_family(),
            model: cpu.get_model(),
            stepping: cpu.get_stepping(),
            flags: texts(cpu.get_flags(), &s("CpuInfo.flags"))?,
            xcr0: cpu.get_xcr0(),
            xsave_size: cpu.get_xsave_size(),
        },
    })
}

fn dec_identity(r: c::file_identity::Reader, what: &dyn Fn() -> String) -> Result<FileIdentity> {
    Ok(FileIdentity {
        path: data(r.get_path(), what)?,
        dev: r.get_dev(),
        inode: r.get_inode(),
        size: r.get_size(),
        mtime_ns: r.get_mtime_ns(),
        mode: r.get_mode(),
        deleted: r.get_deleted(),
        uid: r.get_uid(),
        gid: r.get_gid(),
        ctime_ns: r.get_ctime_ns(),
        generation: r.get_has_generation().then(|| r.get_generation()),
        atime_ns: r.get_atime_ns(),
        content_hash: data(r.get_content_hash(), what)?,
    })
}

fn dec_siginfos(
    r: capnp::Result<capnp::struct_list::Reader<c::sig_info::Owned>>,
    what: &dyn Fn() -> String,
) -> Result<Vec<SigInfo>> {
    let mut v = Vec::new();
    for s in r.ctx(what)?.iter() {
        v.push(SigInfo {
            signo: s.get_signo(),
            code: s.get_code(),
            raw: data(s.get_raw(), what)?,
        });
    }
    Ok(v)
}

fn dec_process(r: c::process::Reader, i: usize) -> Result<Process> {
    let pid = r.get_pid();
    let f = |field: &'static str| move || format!("processes[{i}] (pid {pid}).{field}");
    let creds = r.get_creds().ctx(&f("creds"))?;
    let mm = r.get_mm().ctx(&f("mm"))?;
    let mut p = Process {
        pid,
        ppid: r.get_ppid(),
        pgid: r.get_pgid(),
        sid: r.get_sid(),
        state: text(r.get_state(), &f("state"))?,
        comm: data(r.get_comm(), &f("comm"))?,
        exe: dec_identity(r.get_exe().ctx(&f("exe"))?, &f("exe"))?,
        cmdline: datas(r.get_cmdline(), &f("cmdline"))?,
        environ: datas(r.get_environ(), &f("environ"))?,
        cwd: data(r.get_cwd(), &f("cwd"))?,
        root: data(r.get_root(), &f("root"))?,
        umask: r.get_umask(),
        personality: r.get_personality(),
        creds: dec_creds(creds, &f("creds"))?,
        mm: dec_mm(mm, &f("mm.auxv"))?,
        shared_pending: dec_siginfos(r.get_shared_pending(), &f("sharedPending"))?,
        children: prims(r.get_children(), &f("children"))?,
        oom_score_adj: r.get_oom_score_adj(),
        dumpable: r.get_dumpable(),
        child_subreaper: r.get_child_subreaper(),
        parent_death_signal: r.get_parent_death_signal(),
        exit_signal: r.get_exit_signal(),
        login_uid: r.get_login_uid(),
        timer_slack_ns: r.get_timer_slack_ns(),
        thp_disabled: r.get_thp_disabled(),
        exit_status: r.get_exit_status(),
        cgroup: data(r.get_cgroup(), &f("cgroup"))?,
        membarrier: r.get_membarrier(),
        mdwe: r.get_mdwe(),
        coredump_filter: r.get_coredump_filter(),
        cwd_identity: dec_identity(
            r.get_cwd_identity().ctx(&f("cwdIdentity"))?,
            &f("cwdIdentity"),
        )?,
        controlling_tty: r.get_controlling_tty(),
        ckpt_uffd_fd: Some(r.get_ckpt_uffd_fd()).filter(|&fd| fd >= 0),
        stop_signal: r.get_stop_signal(),
        cgroups_v1: dec_cgroup_paths(r.get_cgroups_v1(), &f("cgroupsV1"))?,
        cgroup_dirs: dec_cgroup_dirs(r, &f("cgroupDirs"))?,
        cgroup_ns_roots: dec_cgroup_paths(r.get_cgroup_ns_roots(), &f("cgroupNsRoots"))?,
        ..Default::default()
    };
    let sh = r.get_shares().ctx(&f("shares"))?;
    p.shares = SharedTables {
        files: sh.get_files(),
        fs: sh.get_fs(),
        sighand: sh.get_sighand(),
        vm: sh.get_vm(),
        sysvsem: sh.get_sysvsem(),
    };
    for x in r.get_rlimits().ctx(&f("rlimits"))?.iter() {
        p.rlimits.push(Rlimit {
            resource: x.get_resource(),
            name: text(x.get_name(), &f("rlimits.name"))?,
            soft: x.get_soft(),
            hard: x.get_hard(),
        });
    }
    for (j, v) in r.get_vmas().ctx(&f("vmas"))?.iter().enumerate() {
        p.vmas.push(dec_vma(v, &|| {
            format!("processes[{i}] (pid {pid}).vmas[{j}]")
        })?);
    }
    p.memory = dec_memory(r.get_memory().ctx(&f("memory"))?, i, pid)?;
    for x in r.get_sigactions().ctx(&f("sigactions"))?.iter() {
        p.sigactions.push(SigAction {
            handler: x.get_handler(),
            flags: x.get_flags(),
            restorer: x.get_restorer(),
            mask: x.get_mask(),
        });
    }
    dec_timers(r, &mut p, &f)?;
    for x in r.get_fds().ctx(&f("fds"))?.iter() {
        p.fds.push(Fd {
            fd: x.get_fd(),
            cloexec: x.get_cloexec(),
            file: x.get_file(),
        });
    }
    for (j, t) in r.get_threads().ctx(&f("threads"))?.iter().enumerate() {
        p.threads.push(dec_thread(t, &|| {
            format!("processes[{i}] (pid {pid}).threads[{j}]")
        })?);
    }
    Ok(p)
}

fn dec_mm(mm: c::mm_layout::Reader, what: &dyn Fn() -> String) -> Result<MmLayout> {
    Ok(MmLayout {
        start_code: mm.get_start_code(),
        end_code: mm.get_end_code(),
        start_data: mm.get_start_data(),
        end_data: mm.get_end_data(),
        start_brk: mm.get_start_brk(),
        brk: mm.get_brk(),
        start_stack: mm.get_start_stack(),
        arg_start: mm.get_arg_start(),
        arg_end: mm.get_arg_end(),
        env_start: mm.get_env_start(),
        env_end: mm.get_env_end(),
        auxv: mm
            .get_auxv()
            .ctx(what)?
            .iter()
            .map(|e| (e.get_key(), e.get_value()))
            .collect(),
    })
}

/// The memory runs of process `i` (`pid`).
fn dec_memory(
    runs: capnp::struct_list::Reader<c::memory_run::Owned>,
    i: usize,
    pid: i32,
) -> Result<Vec<MemoryRun>> {
    let mut out = Vec::new();
    for (j, x) in runs.iter().enumerate() {
        out.push(MemoryRun {
            start: x.get_start(),
            pages: x.get_pages(),
            kind: match x.get_kind() {
                Ok(c::RunKind::Data) => RunKind::Data,
                Ok(c::RunKind::Zero) => RunKind::Zero,
                Ok(c::RunKind::Guard) => RunKind::Guard,
                Ok(c::RunKind::Parent) => RunKind::Parent,
                Err(e) => {
                    return Err(bad_enum(
                        format!("processes[{i}] (pid {pid}).memory[{j}].kind"),
                        e,
                    ))
                }
            },
            frame: x.get_frame(),
            frame_offset: x.get_frame_offset(),
        });
    }
    Ok(out)
}

/// The interval timers and POSIX timers of a process into `p`; `f` names a field.
fn dec_timers<F: Fn() -> String>(
    r: c::process::Reader,
    p: &mut Process,
    f: &dyn Fn(&'static str) -> F,
) -> Result<()> {
    for x in r.get_itimers().ctx(&f("itimers"))?.iter() {
        p.itimers.push(ITimer {
            which: x.get_which(),
            interval_ns: x.get_interval_ns(),
            value_ns: x.get_value_ns(),
        });
    }
    for x in r.get_posix_timers().ctx(&f("posixTimers"))?.iter() {
        p.posix_timers.push(PosixTimer {
            id: x.get_id(),
            clock: x.get_clock(),
            notify: x.get_notify(),
            signo: x.get_signo(),
            value: x.get_value(),
            notify_tid: x.get_notify_tid(),
            interval_ns: x.get_interval_ns(),
            value_ns: x.get_value_ns(),
            overrun: x.get_overrun(),
        });
    }
    Ok(())
}

fn dec_creds(creds: c::credentials::Reader, what: &dyn Fn() -> String) -> Result<Credentials> {
    Ok(Credentials {
        ruid: creds.get_ruid(),
        euid: creds.get_euid(),
        suid: creds.get_suid(),
        fsuid: creds.get_fsuid(),
        rgid: creds.get_rgid(),
        egid: creds.get_egid(),
        sgid: creds.get_sgid(),
        fsgid: creds.get_fsgid(),
        groups: prims(creds.get_groups(), what)?,
        cap_inheritable: creds.get_cap_inheritable(),
        cap_permitted: creds.get_cap_permitted(),
        cap_effective: creds.get_cap_effective(),
        cap_bounding: creds.get_cap_bounding(),
        cap_ambient: creds.get_cap_ambient(),
        securebits: creds.get_securebits(),
        no_new_privs: creds.get_no_new_privs(),
        seccomp_mode: creds.get_seccomp_mode(),
    })
}

fn dec_thread(r: c::thread::Reader, what: &dyn Fn() -> String) -> Result<Thread> {
    let regs = match r.get_regs().ctx(what)?.which() {
        Ok(c::registers::None(())) => Registers::None,
        Ok(c::registers::X8664(g)) => {
            let g = g.ctx(what)?;
            Registers::X8664(X8664Regs {
                r15: g.get_r15(),
                r14: g.get_r14(),
                r13: g.get_r13(),
                r12: g.get_r12(),
                rbp: g.get_rbp(),
                rbx: g.get_rbx(),
                r11: g.get_r11(),
                r10: g.get_r10(),
                r9: g.get_r9(),
                r8: g.get_r8(),
                rax: g.get_rax(),
                rcx: g.get_rcx(),
                rdx: g.get_rdx(),
                rsi: g.get_rsi(),
                rdi: g.get_rdi(),
                orig_rax: g.get_orig_rax(),
                rip: g.get_rip(),
                cs: g.get_cs(),
                eflags: g.get_eflags(),
                rsp: g.get_rsp(),
                ss: g.get_ss(),
                fs_base: g.get_fs_base(),
                gs_base: g.get_gs_base(),
                ds: g.get_ds(),
                es: g.get_es(),
                fs: g.get_fs(),
                gs: g.get_gs(),
                xsave: data(g.get_xsave(), what)?,
                xfeatures: g.get_xfeatures(),
            })
        }
        // registers of an architecture added by a newer minor
        Err(_) => Registers::None,
    };
    let alt = r.get_altstack().ctx(what)?;
    let rl = r.get_robust_list().ctx(what)?;
    let rs = r.get_rseq().ctx(what)?;
    let sc = r.get_sched().ctx(what)?;
    Ok(Thread {
        tid: r.get_tid(),
        comm: data(r.get_comm(), what)?,
        state: text(r.get_state(), what)?,
        regs,
        blocked: r.get_blocked(),
        pending: dec_siginfos(r.get_pending(), what)?,
        altstack: SigAltStack {
            sp: alt.get_sp(),
            size: alt.get_size(),
            flags: alt.get_flags(),
        },
        clear_child_tid: r.get_clear_child_tid(),
        robust_list: RobustList {
            head: rl.get_head(),
            len: rl.get_len(),
        },
        rseq: Rseq {
            address: rs.get_address(),
            length: rs.get_length(),
            signature: rs.get_signature(),
            flags: rs.get_flags(),
        },
        sched: Sched {
            policy: sc.get_policy(),
            priority: sc.get_priority(),
            nice: sc.get_nice(),
            ioprio: sc.get_ioprio(),
        },
        cpu_affinity: prims(r.get_cpu_affinity(), what)?,
        creds: match r.get_has_creds() {
            true => Some(dec_creds(r.get_creds().ctx(what)?, what)?),
            false => None,
        },
        seccomp_filter: r.get_seccomp_filter(),
        cgroups_v1: dec_cgroup_paths(r.get_cgroups_v1(), what)?,
    })
}

fn dec_cgroup_paths(
    r: capnp::Result<capnp::struct_list::Reader<c::cgroup_path::Owned>>,
    what: &dyn Fn() -> String,
) -> Result<Vec<CgroupPath>> {
    let mut v = Vec::new();
    for x in r.ctx(what)?.iter() {
        v.push(CgroupPath {
            hierarchy: text(x.get_hierarchy(), what)?,
            path: data(x.get_path(), what)?,
        });
    }
    Ok(v)
}

fn dec_cgroup_dirs(r: c::process::Reader, what: &dyn Fn() -> String) -> Result<Vec<CgroupDir>> {
    let mut v = Vec::new();
    for d in r.get_cgroup_dirs().ctx(what)?.iter() {
        let p = d.get_dir().ctx(what)?;
        let mut files = Vec::new();
        for f in d.get_files().ctx(what)?.iter() {
            files.push(CgroupFile {
                name: text(f.get_name(), what)?,
                value: match f.get_has_value() {
                    true => Some(data(f.get_value(), what)?),
                    false => None,
                },
                mode: f.get_mode(),
                uid: f.get_uid(),
                gid: f.get_gid(),
            });
        }
        v.push(CgroupDir {
            dir: CgroupPath {
                hierarchy: text(p.get_hierarchy(), what)?,
                path: data(p.get_path(), what)?,
            },
            mode: d.get_mode(),
            uid: d.get_uid(),
            gid: d.get_gid(),
            files,
        });
    }
    Ok(v)
}

fn dec_vma(r: c::vma::Reader, what: &dyn Fn() -> String) -> Result<Vma> {
    let backing = match r.get_backing().ctx(what)?.which() {
        Ok(c::vma_backing::Anonymous(())) => VmaBacking::Anonymous,
        Ok(c::vma_backing::File(fm)) => {
            let fm = fm.ctx(what)?;
            VmaBacking::File(FileMapping {
                file: dec_identity(fm.get_file().ctx(what)?, what)?,
                offset: fm.get_offset(),
                contents: dec_blob(fm.get_contents().ctx(what)?, what)?,
                has_contents: fm.get_has_contents(),
            })
        }
        Ok(c::vma_backing::SharedMemory(s)) => {
            let s = s.ctx(what)?;
            VmaBacking::SharedMemory(SharedMemory {
                kind: match s.get_kind() {
                    Ok(c::ShmKind::AnonymousShared) => ShmKind::AnonymousShared,
                    Ok(c::ShmKind::Memfd) => ShmKind::Memfd,
                    Ok(c::ShmKind::SysvShm) => ShmKind::SysvShm,
                    Ok(c::ShmKind::PosixShm) => ShmKind::PosixShm,
                    Err(e) => {
                        return Err(bad_enum(format!("{}.backing.sharedMemory.kind", what()), e))
                    }
                },
                id: s.get_id(),
                offset: s.get_offset(),
                size: s.get_size(),
                name: data(s.get_name(), what)?,
            })
        }
        Ok(c::vma_backing::Special(s)) => VmaBacking::Special(match s {
            Ok(c::SpecialMapping::Heap) => SpecialMapping::Heap,
            Ok(c::SpecialMapping::Stack) => SpecialMapping::Stack,
            Ok(c::SpecialMapping::Vdso) => SpecialMapping::Vdso,
            Ok(c::SpecialMapping::Vvar) => SpecialMapping::Vvar,
            Ok(c::SpecialMapping::VvarVclock) => SpecialMapping::VvarVclock,
            Ok(c::SpecialMapping::Vsyscall) => SpecialMapping::Vsyscall,
            Ok(c::SpecialMapping::Uprobes) => SpecialMapping::Uprobes,
            // a special mapping added by a newer minor: see Vma.name
            Ok(c::SpecialMapping::Other) | Err(_) => SpecialMapping::Other,
        }),
        Ok(c::vma_backing::AioRing(a)) => {
            let a = a.ctx(what)?;
            VmaBacking::AioRing(AioRing {
                nr: a.get_nr(),
                head: a.get_head(),
                tail: a.get_tail(),
            })
        }
        Ok(c::vma_backing::PacketRing(())) => VmaBacking::PacketRing,
        Err(e) => {
            return Err(Error::Invalid(format!(
                "{}.backing: unknown backing kind {} (written by a newer ckpt?)",
                what(),
                e.0
            )))
        }
    };
    Ok(Vma {
        start: r.get_start(),
        end: r.get_end(),
        prot: r.get_prot(),
        shared: r.get_shared(),
        grows_down: r.get_grows_down(),
        backing,
        madvise: r.get_madvise(),
        vm_flags: texts(r.get_vm_flags(), what)?,
        name: data(r.get_name(), what)?,
        huge_page_size: r.get_huge_page_size(),
    })
}

fn dec_blob(r: c::blob::Reader, what: &dyn Fn() -> String) -> Result<Blob> {
    Ok(Blob {
        size: r.get_size(),
        frames: prims(r.get_frames(), what)?,
    })
}

fn dec_pipe(r: c::pipe::Reader, what: &dyn Fn() -> String) -> Result<Pipe> {
    Ok(Pipe {
        id: r.get_id(),
        end: match r.get_end() {
            Ok(c::PipeEnd::Read) => PipeEnd::Read,
            Ok(c::PipeEnd::Write) => PipeEnd::Write,
            Err(e) => return Err(bad_enum(format!("{}.end", what()), e)),
        },
        data: data(r.get_data(), what)?,
        capacity: r.get_capacity(),
        fifo_path: data(r.get_fifo_path(), what)?,
        fifo: dec_identity(r.get_fifo().ctx(what)?, what)?,
        peer_closed: r.get_peer_closed(),
    })
}

fn dec_sockopts(
    l: capnp::struct_list::Reader<c::sock_opt::Owned>,
    what: &dyn Fn() -> String,
) -> Result<Vec<SockOpt>> {
    let mut out = Vec::with_capacity(l.len() as usize);
    for o in l.iter() {
        out.push(SockOpt {
            level: o.get_level(),
            name: o.get_name(),
            value: data(o.get_value(), what)?,
        });
    }
    Ok(out)
}

fn dec_unix_messages(
    x: c::unix_socket::Reader,
    what: &dyn Fn() -> String,
) -> Result<Vec<UnixMessage>> {
    let mut out = Vec::new();
    for m in x.get_messages().ctx(what)?.iter() {
        out.push(UnixMessage {
            data: data(m.get_data(), what)?,
            files: m.get_files().ctx(what)?.iter().collect(),
            has_creds: m.get_has_creds(),
            pid: m.get_pid(),
            uid: m.get_uid(),
            gid: m.get_gid(),
            sender: data(m.get_sender(), what)?,
        });
    }
    Ok(out)
}

/// An inet socket; `depth` counts the nesting of pending connections
/// (a pending connection has none of its own).
fn dec_inet(
    x: c::inet_socket::Reader,
    what: &dyn Fn() -> String,
    depth: u32,
) -> Result<InetSocket> {
    let tcp = if x.get_has_tcp() {
        Some(dec_tcp(x.get_tcp().ctx(what)?, what)?)
    } else {
        None
    };
    let mut datagrams = Vec::new();
    for d in x.get_datagrams().ctx(what)?.iter() {
        datagrams.push(Datagram {
            src_addr: data(d.get_src_addr(), what)?,
            src_port: d.get_src_port(),
            dst_addr: data(d.get_dst_addr(), what)?,
            data: data(d.get_data(), what)?,
        });
    }
    let mut pending = Vec::new();
    let pl = x.get_pending().ctx(what)?;
    if depth > 0 && !pl.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: a pending connection has pending connections of its own",
            what()
        )));
    }
    for p in pl.iter() {
        pending.push(dec_inet(p, what, depth + 1)?);
    }
    Ok(InetSocket {
        family: x.get_family(),
        sock_type: x.get_type(),
        protocol: x.get_protocol(),
        state: x.get_state(),
        local_addr: data(x.get_local_addr(), what)?,
        local_port: x.get_local_port(),
        remote_addr: data(x.get_remote_addr(), what)?,
        remote_port: x.get_remote_port(),
        backlog: x.get_backlog(),
        options: dec_sockopts(x.get_options().ctx(what)?, what)?,
        shutdown: x.get_shutdown(),
        tcp,
        pending,
        datagrams,
        lock_tag: text(x.get_lock_tag(), what)?,
        closed: x.get_closed(),
        dropped_queue: x.get_dropped_queue(),
    })
}

fn dec_tcp(x: c::tcp_connection::Reader, what: &dyn Fn() -> String) -> Result<TcpConnection> {
    Ok(TcpConnection {
        send_seq: x.get_send_seq(),
        recv_seq: x.get_recv_seq(),
        send_queue: dec_blob(x.get_send_queue().ctx(what)?, what)?,
        unsent: x.get_unsent(),
        recv_queue: dec_blob(x.get_recv_queue().ctx(what)?, what)?,
        mss_clamp: x.get_mss_clamp(),
        snd_wscale: x.get_snd_wscale(),
        rcv_wscale: x.get_rcv_wscale(),
        wscale: x.get_wscale(),
        sack: x.get_sack(),
        timestamps: x.get_timestamps(),
        ts_clock: x.get_ts_clock(),
        window: x.get_has_window().then(|| TcpWindow {
            snd_wl1: x.get_snd_wl1(),
            snd_wnd: x.get_snd_wnd(),
            max_window: x.get_max_window(),
            rcv_wnd: x.get_rcv_wnd(),
            rcv_wup: x.get_rcv_wup(),
        }),
    })
}

fn dec_open_file(r: c::open_file::Reader, i: usize) -> Result<OpenFile> {
    let id = r.get_id();
    let w = move || format!("files[{i}] (id {id})");
    let what: &dyn Fn() -> String = &w;
    use c::open_file::kind::Which as K;
    let kind = match r.get_kind().which() {
        Ok(K::Regular(x)) => FileKind::Regular(dec_regular(x.ctx(what)?, what)?),
        Ok(K::Directory(x)) => FileKind::Directory(dec_identity(x.ctx(what)?, what)?),
        Ok(K::Pipe(x)) => FileKind::Pipe(dec_pipe(x.ctx(what)?, what)?),
        Ok(K::Fifo(x)) => FileKind::Fifo(dec_pipe(x.ctx(what)?, what)?),
        Ok(K::UnixSocket(x)) => FileKind::UnixSocket(dec_unix(x.ctx(what)?, what)?),
        Ok(K::InetSocket(x)) => FileKind::InetSocket(dec_inet(x.ctx(what)?, what, 0)?),
        Ok(K::Tty(x)) => FileKind::Tty(dec_tty(x.ctx(what)?, what)?),
        Ok(K::Eventfd(x)) => {
            let x = x.ctx(what)?;
            FileKind::EventFd(EventFd {
                count: x.get_count(),
                semaphore: x.get_semaphore(),
            })
        }
        Ok(K::Epoll(x)) => FileKind::Epoll(dec_epoll(x.ctx(what)?, what)?),
        Ok(K::Timerfd(x)) => FileKind::TimerFd(dec_timerfd(x.ctx(what)?)),
        Ok(K::Signalfd(x)) => FileKind::SignalFd(SignalFd {
            mask: x.ctx(what)?.get_mask(),
        }),
        Ok(K::Inotify(x)) => FileKind::Inotify(dec_inotify(x.ctx(what)?, what)?),
        Ok(K::Memfd(x)) => FileKind::MemFd(dec_memfd(x.ctx(what)?, what)?),
        Ok(K::CharDevice(x)) => {
            let x = x.ctx(what)?;
            FileKind::CharDevice(CharDevice {
                rdev: x.get_rdev(),
                path: data(x.get_path(), what)?,
                file: if x.has_file() {
                    dec_identity(x.get_file().ctx(what)?, what)?
                } else {
                    FileIdentity::default()
                },
            })
        }
        Ok(K::Other(x)) => FileKind::Other(text(x, what)?),
        Ok(K::Pidfd(x)) => {
            let x = x.ctx(what)?;
            FileKind::Pidfd(Pidfd {
                pid: x.get_pid(),
                dead: x.get_dead(),
                thread: x.get_thread(),
                inode: x.get_inode(),
            })
        }
        Ok(K::Fanotify(x)) => FileKind::Fanotify(dec_fanotify(x.ctx(what)?, what)?),
        Ok(K::Opath(x)) => {
            let x = x.ctx(what)?;
            FileKind::OPath(OPath {
                file: dec_identity(x.get_file().ctx(what)?, what)?,
                symlink: x.get_symlink(),
                target: if x.has_target() {
                    data(x.get_target(), what)?
                } else {
                    Vec::new()
                },
            })
        }
        Ok(K::Nsfs(x)) => {
            let x = x.ctx(what)?;
            FileKind::Nsfs(NsFile {
                kind: text(x.get_kind(), what)?,
                inode: x.get_inode(),
                pid: x.get_pid(),
            })
        }
        Ok(K::NetlinkSocket(x)) => FileKind::NetlinkSocket(dec_netlink(x.ctx(what)?, what)?),
        Ok(K::PacketSocket(x)) => FileKind::PacketSocket(dec_packet(x.ctx(what)?, what)?),
        Ok(K::BpfMap(x)) => FileKind::BpfMap(dec_bpf_map(x.ctx(what)?, what)?),
        // A kind added by a newer minor: keep it inspectable.
        Err(e) => FileKind::Other(format!(
            "unknown file kind {} (written by a newer ckpt)",
            e.0
        )),
    };
    let owner = r.get_owner().ctx(what)?;
    Ok(OpenFile {
        id,
        flags: r.get_flags(),
        position: r.get_position(),
        path: data(r.get_path(), what)?,
        kind,
        owner: FileOwner {
            pid: owner.get_pid(),
            kind: owner.get_kind(),
            signal: owner.get_signal(),
        },
    })
}

fn dec_regular(x: c::regular_file::Reader, what: &dyn Fn() -> String) -> Result<RegularFile> {
    Ok(RegularFile {
        file: dec_identity(x.get_file().ctx(what)?, what)?,
        contents: dec_blob(x.get_contents().ctx(what)?, what)?,
        has_contents: x.get_has_contents(),
        extents: x
            .get_extents()
            .ctx(what)?
            .iter()
            .map(|e| FileExtent {
                offset: e.get_offset(),
                length: e.get_length(),
            })
            .collect(),
    })
}

fn dec_unix(x: c::unix_socket::Reader, what: &dyn Fn() -> String) -> Result<UnixSocket> {
    Ok(UnixSocket {
        inode: x.get_inode(),
        sock_type: x.get_type(),
        state: x.get_state(),
        local_path: data(x.get_local_path(), what)?,
        peer_path: data(x.get_peer_path(), what)?,
        peer_inode: x.get_peer_inode(),
        listening: x.get_listening(),
        backlog: x.get_backlog(),
        queued: data(x.get_queued(), what)?,
        shutdown: x.get_shutdown(),
        messages: dec_unix_messages(x, what)?,
        file_mode: x.get_file_mode(),
        file_uid: x.get_file_uid(),
        file_gid: x.get_file_gid(),
        deleted: x.get_deleted(),
        pending: x.get_pending().ctx(what)?.iter().collect(),
        external: match x.get_external() {
            Ok(c::UnixExternal::None) => UnixExternal::None,
            Ok(c::UnixExternal::Reconnect) => UnixExternal::Reconnect,
            Ok(c::UnixExternal::Close) => UnixExternal::Close,
            Err(e) => return Err(bad_enum(format!("{}.external", what()), e)),
        },
        options: dec_sockopts(x.get_options().ctx(what)?, what)?,
    })
}

fn dec_tty(x: c::tty::Reader, what: &dyn Fn() -> String) -> Result<Tty> {
    Ok(Tty {
        index: x.get_index(),
        is_controller: x.get_is_controller(),
        termios: data(x.get_termios(), what)?,
        win_rows: x.get_win_rows(),
        win_cols: x.get_win_cols(),
        foreground_pgrp: x.get_foreground_pgrp(),
        rdev: x.get_rdev(),
        role: match x.get_role() {
            Ok(c::TtyRole::Unknown) => TtyRole::Unknown,
            Ok(c::TtyRole::Slave) => TtyRole::Slave,
            Ok(c::TtyRole::Master) => TtyRole::Master,
            Ok(c::TtyRole::DevTty) => TtyRole::DevTty,
            Ok(c::TtyRole::Console) => TtyRole::Console,
            Ok(c::TtyRole::Vt) => TtyRole::Vt,
            Ok(c::TtyRole::Serial) => TtyRole::Serial,
            Err(e) => return Err(bad_enum(format!("{}.tty.role", what()), e)),
        },
        real_rdev: x.get_real_rdev(),
        pair: x.get_pair(),
        devpts: x.get_devpts(),
        win_xpixel: x.get_win_xpixel(),
        win_ypixel: x.get_win_ypixel(),
        sid: x.get_sid(),
        hung_up: x.get_hung_up(),
    })
}

fn dec_epoll(x: c::epoll::Reader, what: &dyn Fn() -> String) -> Result<Epoll> {
    let mut targets = Vec::new();
    for t in x.get_targets().ctx(what)?.iter() {
        targets.push(EpollTarget {
            fd: t.get_fd(),
            file: t.get_file(),
            events: t.get_events(),
            data: t.get_data(),
        });
    }
    Ok(Epoll { targets })
}

fn dec_timerfd(x: c::timer_fd::Reader) -> TimerFd {
    TimerFd {
        clock: x.get_clock(),
        interval_ns: x.get_interval_ns(),
        value_ns: x.get_value_ns(),
        ticks: x.get_ticks(),
        settime_flags: x.get_settime_flags(),
        expiry_ns: x.get_expiry_ns(),
    }
}

fn dec_inotify(x: c::inotify::Reader, what: &dyn Fn() -> String) -> Result<Inotify> {
    let mut watches = Vec::new();
    for w in x.get_watches().ctx(what)?.iter() {
        watches.push(InotifyWatch {
            wd: w.get_wd(),
            mask: w.get_mask(),
            path: data(w.get_path(), what)?,
            inode: w.get_inode(),
            dev: w.get_dev(),
        });
    }
    Ok(Inotify { watches })
}

fn dec_memfd(x: c::mem_fd::Reader, what: &dyn Fn() -> String) -> Result<MemFd> {
    Ok(MemFd {
        name: data(x.get_name(), what)?,
        id: x.get_id(),
        size: x.get_size(),
        seals: x.get_seals(),
        contents: dec_blob(x.get_contents().ctx(what)?, what)?,
        mode: x.get_mode(),
        huge_page_size: x.get_huge_page_size(),
    })
}

fn dec_fanotify(x: c::fanotify::Reader, what: &dyn Fn() -> String) -> Result<Fanotify> {
    let mut marks = Vec::new();
    for mk in x.get_marks().ctx(what)?.iter() {
        marks.push(FanotifyMark {
            mark_type: mk.get_type(),
            mask: mk.get_mask(),
            ignored_mask: mk.get_ignored_mask(),
            flags: mk.get_flags(),
            path: data(mk.get_path(), what)?,
            dev: mk.get_dev(),
            inode: mk.get_inode(),
        });
    }
    Ok(Fanotify {
        init_flags: x.get_init_flags(),
        event_flags: x.get_event_flags(),
        marks,
    })
}

fn dec_netlink(x: c::netlink_socket::Reader, what: &dyn Fn() -> String) -> Result<NetlinkSocket> {
    Ok(NetlinkSocket {
        protocol: x.get_protocol(),
        sock_type: x.get_type(),
        port_id: x.get_port_id(),
        groups: x.get_groups().ctx(what)?.iter().collect(),
        dst_port_id: x.get_dst_port_id(),
        dst_group: x.get_dst_group(),
        options: dec_sockopts(x.get_options().ctx(what)?, what)?,
        dropped_queue: x.get_dropped_queue(),
    })
}

fn dec_bpf_map(x: c::bpf_map::Reader, what: &dyn Fn() -> String) -> Result<BpfMap> {
    Ok(BpfMap {
        map_type: x.get_map_type(),
        key_size: x.get_key_size(),
        value_size: x.get_value_size(),
        max_entries: x.get_max_entries(),
        map_flags: x.get_map_flags(),
        name: data(x.get_name(), what)?,
        frozen: x.get_frozen(),
        map_extra: x.get_map_extra(),
        keys: data(x.get_keys(), what)?,
        values: data(x.get_values(), what)?,
    })
}

/// A ring of a packet socket; None when it has no blocks (not set).
fn dec_packet_ring(x: c::packet_ring::Reader) -> Option<PacketRing> {
    let r = PacketRing {
        block_size: x.get_block_size(),
        block_nr: x.get_block_nr(),
        frame_size: x.get_frame_size(),
        frame_nr: x.get_frame_nr(),
        retire_tmo: x.get_retire_tmo(),
        sizeof_priv: x.get_sizeof_priv(),
        features: x.get_features(),
    };
    (r.block_nr != 0).then_some(r)
}

fn enc_packet_ring(r: &PacketRing, mut x: c::packet_ring::Builder) {
    x.set_block_size(r.block_size);
    x.set_block_nr(r.block_nr);
    x.set_frame_size(r.frame_size);
    x.set_frame_nr(r.frame_nr);
    x.set_retire_tmo(r.retire_tmo);
    x.set_sizeof_priv(r.sizeof_priv);
    x.set_features(r.features);
}

fn dec_packet(x: c::packet_socket::Reader, what: &dyn Fn() -> String) -> Result<PacketSocket> {
    let mut memberships = Vec::new();
    for m in x.get_memberships().ctx(what)?.iter() {
        memberships.push(PacketMembership {
            ifindex: m.get_ifindex(),
            mr_type: m.get_type(),
            address: data(m.get_address(), what)?,
        });
    }
    Ok(PacketSocket {
        sock_type: x.get_type(),
        protocol: x.get_protocol(),
        ifindex: x.get_ifindex(),
        version: x.get_version(),
        fanout: x.get_fanout(),
        memberships,
        options: dec_sockopts(x.get_options().ctx(what)?, what)?,
        dropped_queue: x.get_dropped_queue(),
        rx_ring: if x.has_rx_ring() {
            dec_packet_ring(x.get_rx_ring().ctx(what)?)
        } else {
            None
        },
        tx_ring: if x.has_tx_ring() {
            dec_packet_ring(x.get_tx_ring().ctx(what)?)
        } else {
            None
        },
    })
}
