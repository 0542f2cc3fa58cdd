//! Synthetic images shared by the integration tests.
#![allow(dead_code)]

use ckpt_image::*;
#[allow(unused_imports)] // not every test binary writes files
pub use ckpt_testkit::TempDir;

pub const PS: u64 = 4096;

/// Base addresses of the VMAs of process 100.
pub const ANON: u64 = 0x10000; // 16 pages anonymous rw
pub const FILEMAP: u64 = 0x40000; // 4 pages file-backed
pub const SHM: u64 = 0x50000; // 2 pages memfd shared
pub const HEAP: u64 = 0x60000; // 4 pages [heap]
pub const STACK: u64 = 0x7ff000; // 1 page [stack]
pub const VDSO: u64 = 0x900000; // 2 pages [vdso]

/// Deterministic page contents: page `n` of a region filled with a pattern.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|i| {
            if i % 8 == 0 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
            }
            // half compressible: repeat a byte within 16-byte groups
            if (i / 16) % 2 == 0 {
                (x >> ((i % 8) * 8)) as u8
            } else {
                (seed as u8).wrapping_add((i / 16) as u8)
            }
        })
        .collect()
}

pub fn identity(path: &str) -> FileIdentity {
    FileIdentity {
        path: path.as_bytes().to_vec(),
        dev: 0x803,
        inode: 1234,
        size: 16384,
        mtime_ns: 1_700_000_000_123_456_789,
        mode: 0o100755,
        deleted: false,
        uid: 1000,
        gid: 1000,
        ctime_ns: 1_700_000_000_223_456_789,
        generation: Some(77),
        atime_ns: 1_700_000_000_323_456_789,
        content_hash: vec![0xab; 32],
    }
}

fn siginfo(signo: i32) -> SigInfo {
    let mut raw = vec![0u8; 128];
    raw[0..4].copy_from_slice(&signo.to_le_bytes());
    SigInfo {
        signo,
        code: -6,
        raw,
    }
}

fn vma(start: u64, pages: u64, prot: u32, backing: VmaBacking, name: &str) -> Vma {
    Vma {
        start,
        end: start + pages * PS,
        prot,
        shared: matches!(backing, VmaBacking::SharedMemory(_)),
        grows_down: false,
        backing,
        madvise: 1 << madvise::DONT_FORK,
        vm_flags: vec!["rd".into(), "wr".into(), "mr".into()],
        name: name.as_bytes().to_vec(),
        huge_page_size: 0,
    }
}

fn thread(tid: i32, xsave_len: usize) -> Thread {
    let mut regs = X8664Regs::default();
    let mut g = [0u64; 27];
    for (i, v) in g.iter_mut().enumerate() {
        *v = 0x1000 + i as u64 * 0x111 + tid as u64;
    }
    regs.set_gprs(&g);
    regs.rip = ANON + 0x123;
    regs.rsp = STACK + 0xff0;
    regs.orig_rax = u64::MAX;
    regs.xsave = pattern(tid as u64, xsave_len);
    regs.xfeatures = 0x7;
    Thread {
        tid,
        comm: b"worker\x01".to_vec(),
        state: "S".into(),
        regs: Registers::X8664(regs),
        blocked: 1 << 9,
        pending: vec![siginfo(10)],
        altstack: SigAltStack {
            sp: 0x5000,
            size: 8192,
            flags: 0,
        },
        clear_child_tid: 0x7f00_0000_1000,
        robust_list: RobustList {
            head: 0x7f00_0000_2000,
            len: 24,
        },
        rseq: Rseq {
            address: 0x7f00_0000_3000,
            length: 32,
            signature: 0x5305_3053,
            flags: 0,
        },
        sched: Sched {
            policy: 0,
            priority: 0,
            nice: -2,
            ioprio: (2 << 13) | 6,
        },
        cpu_affinity: vec![0b11, u64::MAX],
        creds: (tid % 2 == 1).then(|| Credentials {
            ruid: 1000,
            euid: 1001,
            groups: vec![5, 6],
            ..Default::default()
        }),
        seccomp_filter: 1,
        cgroups_v1: if tid % 2 == 1 {
            vec![CgroupPath {
                hierarchy: "name=t".into(),
                path: format!("/thread{tid}").into_bytes(),
            }]
        } else {
            Vec::new()
        },
    }
}

/// A model exercising every FileKind, VmaBacking and ShmKind; memory runs
/// and frames are filled in by the writer. `blobs` are the Blobs returned by
/// add_blob for the deleted regular file and the memfd.
pub fn rich_model(deleted_blob: Blob, memfd_blob: Blob) -> Image {
    let anon = VmaBacking::Anonymous;
    let p100 = Process {
        pid: 100,
        ppid: 1,
        pgid: 100,
        sid: 100,
        state: "S".into(),
        comm: b"rich".to_vec(),
        exe: identity("/usr/bin/rich"),
        cmdline: vec![
            b"rich".to_vec(),
            b"--flag".to_vec(),
            vec![0xff, 0xfe, 0x00, 0x41],
        ],
        environ: vec![b"HOME=/root".to_vec(), b"LANG=C.UTF-8".to_vec()],
        cwd: b"/tmp/\xe2\x9c\x93".to_vec(),
        root: b"/".to_vec(),
        umask: 0o022,
        rlimits: vec![Rlimit {
            resource: 7,
            name: "NOFILE".into(),
            soft: 1024,
            hard: u64::MAX,
        }],
        creds: Credentials {
            ruid: 1000,
            euid: 1000,
            suid: 1000,
            fsuid: 1000,
            rgid: 100,
            egid: 100,
            sgid: 100,
            fsgid: 100,
            groups: vec![100, 27, 4],
            cap_inheritable: 0,
            cap_permitted: 0,
            cap_effective: 0,
            cap_bounding: 0x1ff_ffff_ffff,
            cap_ambient: 0,
            securebits: 0,
            no_new_privs: true,
            seccomp_mode: 0,
        },
        personality: 0,
        mm: MmLayout {
            start_code: FILEMAP,
            end_code: FILEMAP + PS,
            start_data: FILEMAP + PS,
            end_data: FILEMAP + 2 * PS,
            start_brk: HEAP,
            brk: HEAP + 4 * PS,
            start_stack: STACK + 0xf00,
            arg_start: STACK + 0xf00,
            arg_end: STACK + 0xf40,
            env_start: STACK + 0xf40,
            env_end: STACK + 0xf80,
            auxv: vec![(6, 4096), (25, STACK + 0xfe0), (0, 0)],
        },
        vmas: vec![
            vma(ANON, 16, PROT_READ | PROT_WRITE, anon.clone(), ""),
            vma(
                FILEMAP,
                4,
                PROT_READ | PROT_EXEC,
                VmaBacking::File(FileMapping {
                    file: identity("/usr/bin/rich"),
                    offset: 0,
                    ..Default::default()
                }),
                "/usr/bin/rich",
            ),
            vma(
                SHM,
                2,
                PROT_READ | PROT_WRITE,
                VmaBacking::SharedMemory(SharedMemory {
                    kind: ShmKind::Memfd,
                    id: 777,
                    offset: 0,
                    size: 2 * PS,
                    name: b"/memfd:buf (deleted)".to_vec(),
                }),
                "/memfd:buf (deleted)",
            ),
            vma(
                HEAP,
                4,
                PROT_READ | PROT_WRITE,
                VmaBacking::Special(SpecialMapping::Heap),
                "[heap]",
            ),
            vma(
                STACK,
                1,
                PROT_READ | PROT_WRITE,
                VmaBacking::Special(SpecialMapping::Stack),
                "[stack]",
            ),
            vma(
                VDSO,
                2,
                PROT_READ | PROT_EXEC,
                VmaBacking::Special(SpecialMapping::Vdso),
                "[vdso]",
            ),
        ],
        memory: vec![],
        sigactions: (0..64)
            .map(|i| SigAction {
                handler: match i {
                    1 => 1,
                    9 => ANON + 0x400,
                    _ => 0,
                },
                flags: 0x0400_0000,
                restorer: ANON + 0x500,
                mask: 0,
            })
            .collect(),
        shared_pending: vec![siginfo(14)],
        itimers: vec![
            ITimer {
                which: 0,
                interval_ns: 1_000_000,
                value_ns: 500_000,
            },
            ITimer::default(),
            ITimer::default(),
        ],
        posix_timers: vec![PosixTimer {
            id: 0,
            clock: 1,
            notify: 0,
            signo: 34,
            value: 42,
            notify_tid: 100,
            interval_ns: 0,
            value_ns: 1_000,
            overrun: 0,
        }],
        fds: (0..15)
            .map(|i| Fd {
                fd: i,
                cloexec: i % 2 == 1,
                file: 1 + i as u32,
            })
            .collect(),
        threads: vec![thread(100, 2696), thread(101, 832)],
        children: vec![200],
        oom_score_adj: -100,
        dumpable: true,
        child_subreaper: false,
        parent_death_signal: 0,
        exit_signal: 17,
        login_uid: u32::MAX,
        timer_slack_ns: 50_000,
        thp_disabled: false,
        mdwe: 1,
        coredump_filter: 0x7f,
        exit_status: 0,
        shares: SharedTables::default(),
        cgroup: b"/user.slice/rich".to_vec(),
        membarrier: 1 << 3,
        cwd_identity: identity("/home/rich"),
        controlling_tty: 0x8801,
        ckpt_uffd_fd: Some(900),
        stop_signal: 20,
        cgroups_v1: vec![
            CgroupPath {
                hierarchy: "cpu,cpuacct".into(),
                path: b"/rich".to_vec(),
            },
            CgroupPath {
                hierarchy: "name=t".into(),
                path: b"/a".to_vec(),
            },
        ],
        cgroup_dirs: vec![CgroupDir {
            dir: CgroupPath {
                hierarchy: "name=t".into(),
                path: b"/a".to_vec(),
            },
            mode: 0o755,
            uid: 1000,
            gid: 1000,
            files: vec![
                CgroupFile {
                    name: "notify_on_release".into(),
                    value: Some(b"1\n".to_vec()),
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                },
                CgroupFile {
                    name: "tasks".into(),
                    value: None,
                    mode: 0o666,
                    uid: 1000,
                    gid: 1000,
                },
            ],
        }],
        cgroup_ns_roots: vec![CgroupPath {
            hierarchy: String::new(),
            path: b"/user.slice".to_vec(),
        }],
    };
    let p200 = Process {
        pid: 200,
        ppid: 100,
        pgid: 100,
        sid: 100,
        state: "R".into(),
        comm: b"child".to_vec(),
        cmdline: vec![b"child".to_vec()],
        vmas: vec![vma(
            ANON,
            8,
            PROT_READ | PROT_WRITE,
            VmaBacking::SharedMemory(SharedMemory {
                kind: ShmKind::AnonymousShared,
                id: 9,
                offset: 0,
                size: 8 * PS,
                name: b"/dev/zero (deleted)".to_vec(),
            }),
            "/dev/zero (deleted)",
        )],
        fds: vec![
            Fd {
                fd: 0,
                cloexec: false,
                file: 1,
            },
            Fd {
                fd: 5,
                cloexec: true,
                file: 3,
            },
        ],
        threads: vec![Thread {
            tid: 200,
            ..Default::default()
        }],
        exit_signal: 17,
        ..Default::default()
    };
    let kinds: Vec<FileKind> = vec![
        FileKind::Tty(Tty {
            index: 3,
            is_controller: true,
            termios: vec![1, 2, 3, 0, 0x7f],
            win_rows: 50,
            win_cols: 132,
            foreground_pgrp: 100,
            rdev: 0x8803,
            role: TtyRole::Slave,
            real_rdev: 0x8803,
            pair: 1,
            devpts: 0x18,
            win_xpixel: 640,
            win_ypixel: 480,
            sid: 100,
            hung_up: false,
        }),
        FileKind::Regular(RegularFile {
            file: FileIdentity {
                deleted: true,
                ..identity("/tmp/gone")
            },
            contents: deleted_blob,
            has_contents: true,
            extents: vec![],
        }),
        FileKind::Pipe(Pipe {
            id: 5555,
            end: PipeEnd::Read,
            data: b"buffered\n".to_vec(),
            capacity: 65536,
            fifo_path: vec![],
            fifo: FileIdentity::default(),
            peer_closed: false,
        }),
        FileKind::Pipe(Pipe {
            id: 5555,
            end: PipeEnd::Write,
            data: vec![],
            capacity: 65536,
            fifo_path: vec![],
            fifo: FileIdentity::default(),
            peer_closed: false,
        }),
        FileKind::Directory(identity("/tmp")),
        FileKind::Fifo(Pipe {
            id: 6,
            end: PipeEnd::Read,
            data: vec![0, 1, 2],
            capacity: 4096,
            fifo_path: b"/tmp/fifo".to_vec(),
            fifo: identity("/tmp/fifo"),
            peer_closed: false,
        }),
        FileKind::UnixSocket(UnixSocket {
            inode: 77,
            sock_type: 1,
            state: 3,
            local_path: b"\0abstract".to_vec(),
            peer_path: b"/run/x.sock".to_vec(),
            peer_inode: 78,
            listening: false,
            backlog: 0,
            queued: b"hello".to_vec(),
            shutdown: 0,
            messages: vec![UnixMessage {
                data: b"hello".to_vec(),
                files: vec![1],
                has_creds: true,
                pid: 42,
                uid: 1000,
                gid: 100,
                sender: b"\0peer".to_vec(),
            }],
            file_mode: 0o140755,
            file_uid: 1000,
            file_gid: 100,
            deleted: true,
            pending: vec![90, 91],
            external: UnixExternal::Reconnect,
            options: vec![SockOpt {
                level: 1,
                name: 16,
                value: 1i32.to_ne_bytes().to_vec(),
            }],
        }),
        FileKind::InetSocket(InetSocket {
            family: 2,
            sock_type: 1,
            protocol: 6,
            state: 10,
            local_addr: vec![127, 0, 0, 1],
            local_port: 8080,
            remote_addr: vec![0, 0, 0, 0],
            remote_port: 0,
            backlog: 128,
            options: vec![SockOpt {
                level: 1,
                name: 2,
                value: 1i32.to_le_bytes().to_vec(),
            }],
            shutdown: 2,
            pending: vec![InetSocket {
                family: 2,
                sock_type: 1,
                protocol: 6,
                state: 1,
                local_addr: vec![127, 0, 0, 1],
                local_port: 8080,
                remote_addr: vec![127, 0, 0, 1],
                remote_port: 40000,
                tcp: Some(TcpConnection {
                    send_seq: 1,
                    recv_seq: u32::MAX,
                    unsent: 0,
                    mss_clamp: 65483,
                    snd_wscale: 7,
                    rcv_wscale: 7,
                    wscale: true,
                    sack: true,
                    timestamps: true,
                    ts_clock: 123456,
                    window: Some(TcpWindow {
                        snd_wl1: 1,
                        snd_wnd: 2,
                        max_window: 3,
                        rcv_wnd: 4,
                        rcv_wup: 5,
                    }),
                    ..Default::default()
                }),
                lock_tag: "t1".into(),
                ..Default::default()
            }],
            lock_tag: "t1".into(),
            ..Default::default()
        }),
        FileKind::EventFd(EventFd {
            count: 3,
            semaphore: true,
        }),
        FileKind::Epoll(Epoll {
            targets: vec![EpollTarget {
                fd: 8,
                file: 9,
                events: 1,
                data: 0xdead_beef,
            }],
        }),
        FileKind::TimerFd(TimerFd {
            clock: 1,
            interval_ns: 10,
            value_ns: 20,
            ticks: 2,
            settime_flags: 1,
            expiry_ns: 1_700_000_001_000_000_000,
        }),
        FileKind::SignalFd(SignalFd { mask: 1 << 1 }),
        FileKind::Inotify(Inotify {
            watches: vec![InotifyWatch {
                wd: 1,
                mask: 0x100,
                path: b"/etc".to_vec(),
                inode: 2,
                dev: 3,
            }],
        }),
        FileKind::MemFd(MemFd {
            name: b"buf".to_vec(),
            id: 777,
            size: 2 * PS,
            seals: 0,
            contents: memfd_blob,
            mode: 0o600,
            huge_page_size: 0,
        }),
        FileKind::CharDevice(CharDevice {
            rdev: 0x103,
            path: b"/dev/null".to_vec(),
            ..Default::default()
        }),
        FileKind::Other(String::from("anon_inode:[bpf-map]")),
        FileKind::InetSocket(InetSocket {
            family: 10,
            sock_type: 2,
            protocol: 17,
            state: 7,
            local_addr: vec![0; 16],
            local_port: 5353,
            datagrams: vec![Datagram {
                src_addr: vec![127, 0, 0, 1],
                src_port: 9,
                dst_addr: Vec::new(),
                data: b"dgram".to_vec(),
            }],
            dropped_queue: 3,
            closed: true,
            ..Default::default()
        }),
        FileKind::NetlinkSocket(NetlinkSocket {
            protocol: 0,
            sock_type: 3,
            port_id: 4242,
            groups: vec![1, 20],
            dst_port_id: 0,
            dst_group: 0,
            options: Vec::new(),
            dropped_queue: 100,
        }),
        FileKind::PacketSocket(PacketSocket {
            sock_type: 3,
            protocol: 0x0300,
            ifindex: 1,
            version: 2,
            fanout: 7,
            memberships: vec![PacketMembership {
                ifindex: 1,
                mr_type: 1,
                address: Vec::new(),
            }],
            options: Vec::new(),
            dropped_queue: 0,
            rx_ring: Some(PacketRing {
                block_size: 4096,
                block_nr: 1,
                frame_size: 1024,
                frame_nr: 4,
                retire_tmo: 0,
                sizeof_priv: 0,
                features: 0,
            }),
            tx_ring: None,
        }),
        FileKind::BpfMap(BpfMap {
            map_type: 1,
            key_size: 4,
            value_size: 8,
            max_entries: 16,
            map_flags: 4,
            name: b"counts".to_vec(),
            frozen: true,
            map_extra: 0,
            keys: vec![1, 0, 0, 0, 2, 0, 0, 0],
            values: (0..16).collect(),
        }),
    ];
    let files = kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| OpenFile {
            id: 1 + i as u32,
            flags: 0o2,
            position: i as u64 * 10,
            path: format!("/proc/self/fd/{i}").into_bytes(),
            kind,
            owner: FileOwner {
                pid: 0,
                kind: 0,
                signal: 0,
            },
        })
        .collect();
    Image {
        format_major: 0,
        format_minor: 0,
        tool_version: "ckpt 0.1.0 (test)".into(),
        created_ns: 1_700_000_000_000_000_000,
        host: HostInfo {
            hostname: "testhost".into(),
            kernel_release: "6.1.0-test".into(),
            arch: Arch::X8664,
            page_size: 4096,
            cpu: CpuInfo {
                vendor: "GenuineIntel".into(),
                model_name: "Test CPU @ 3.00GHz".into(),
                family: 6,
                model: 85,
                stepping: 7,
                flags: vec!["fpu".into(), "sse2".into(), "avx2".into(), "xsave".into()],
                xcr0: 0x2e7,
                xsave_size: 2696,
            },
            boot_id: "00000000-0000-4000-8000-000000000000".into(),
        },
        processes: vec![p100, p200],
        files,
        frames: vec![],
        root_pid: 100,
        freeze_ns: 12_345_678,
        generation: 0,
        notes: vec![Note {
            key: "test".into(),
            value: "rich".into(),
        }],
        locks: vec![FileLock {
            kind: LockKind::Posix,
            lock_type: LockType::Write,
            start: 10,
            length: 0,
            pid: 100,
            file: 1,
            fd: 3,
        }],
        seccomp_filters: vec![SeccompFilter {
            parent: 0,
            program: vec![6, 0, 0, 0, 0, 0, 0xff, 0x7f],
            flags: 0,
        }],
        sysv_shm: vec![],
        sysv_sem: vec![SysvSem {
            perm: IpcPerm {
                key: 0x1234,
                id: 5,
                mode: 0o600,
                ..Default::default()
            },
            values: vec![1, 0, 7],
        }],
        sysv_msg: vec![SysvMsgQueue {
            perm: IpcPerm {
                key: 0x4321,
                id: 6,
                mode: 0o600,
                ..Default::default()
            },
            qbytes: 16384,
            messages: vec![SysvMsg {
                mtype: 1,
                data: b"hello".to_vec(),
            }],
        }],
        image_id: vec![7; 16],
        parent: ParentRef::default(),
        ptys: vec![PtyPair {
            id: 1,
            index: 3,
            devpts: 0x18,
            termios: (0..44).collect(),
            win_rows: 50,
            win_cols: 132,
            win_xpixel: 640,
            win_ypixel: 480,
            packet: true,
            locked: false,
            slave_exclusive: true,
            peer_closed: false,
            sid: 100,
            foreground_pgrp: 100,
            input_lines: vec![b"ls\n".to_vec(), Vec::new()],
            input_pending: b"echo hal".to_vec(),
            output: b"$ \r\n".to_vec(),
            packet_status: 1,
            slave_mode: 0o20620,
            slave_uid: 1000,
            slave_gid: 5,
        }],
    }
}

/// Contents of the anonymous VMA of pid 100: pages 0..16, with pages 3, 4,
/// 10 all-zero.
pub fn anon_contents() -> Vec<u8> {
    let mut v = pattern(1, 16 * PS as usize);
    for z in [3usize, 4, 10] {
        v[z * PS as usize..(z + 1) * PS as usize].fill(0);
    }
    v
}

pub fn deleted_contents() -> Vec<u8> {
    pattern(99, 10_000)
}

pub fn memfd_contents() -> Vec<u8> {
    pattern(77, 2 * PS as usize)
}

/// Write the rich image with `opts`, into any writer.
pub fn write_rich<W: std::io::Write>(out: W, opts: WriteOptions) -> W {
    let mut w = ImageWriter::new(out, opts).unwrap();
    let anon = anon_contents();
    // pid 100: anonymous vma in two calls (increasing addresses)
    w.add_pages(100, ANON, &anon[..7 * PS as usize]).unwrap();
    w.add_pages(100, ANON + 7 * PS, &anon[7 * PS as usize..])
        .unwrap();
    let deleted = w.add_blob(&deleted_contents()).unwrap();
    // file mapping: only page 1 saved (a private COW page), 0, 2, 3 not saved
    w.add_pages(100, FILEMAP + PS, &pattern(5, PS as usize))
        .unwrap();
    // heap: pages 0 and 2 saved (1 and 3 no run -> zero)
    w.add_pages(100, HEAP, &pattern(6, PS as usize)).unwrap();
    w.add_pages(100, HEAP + 2 * PS, &pattern(7, PS as usize))
        .unwrap();
    // stack: whole page
    w.add_pages(100, STACK, &pattern(8, PS as usize)).unwrap();
    // pid 200: shared anonymous, 8 pages, all zero but page 5
    let mut shared = vec![0u8; 8 * PS as usize];
    shared[5 * PS as usize..6 * PS as usize].copy_from_slice(&pattern(9, PS as usize));
    w.add_pages(200, ANON, &shared).unwrap();
    let memfd = w.add_blob(&memfd_contents()).unwrap();
    w.finish(rich_model(deleted, memfd)).unwrap()
}

/// The rich image with small frames (4 pages) so that runs cross frames.
pub fn rich_bytes(compression: Compression) -> Vec<u8> {
    write_rich(
        Vec::new(),
        WriteOptions {
            compression,
            page_size: 4096,
            frame_size: 4 * PS as usize,
        },
    )
}

/// A small image: one process, a few pages (for exhaustive corruption tests).
pub fn small_bytes() -> Vec<u8> {
    let mut w = ImageWriter::new(
        Vec::new(),
        WriteOptions {
            compression: Compression::Fast,
            page_size: 4096,
            frame_size: 2 * PS as usize,
        },
    )
    .unwrap();
    // compressible pages 0 and 2, a zero page 1
    let mut data: Vec<u8> = (0..3 * PS as usize)
        .map(|i| (i / 97) as u8 ^ (i % 5) as u8)
        .collect();
    data[PS as usize..2 * PS as usize].fill(0);
    w.add_pages(7, 0x1000, &data).unwrap();
    w.add_pages(7, 0x5000, &vec![0xAB; PS as usize]).unwrap();
    let img = Image {
        tool_version: "small".into(),
        created_ns: 1,
        host: HostInfo {
            page_size: 4096,
            ..Default::default()
        },
        processes: vec![Process {
            pid: 7,
            comm: b"small".to_vec(),
            vmas: vec![
                Vma {
                    start: 0x1000,
                    end: 0x4000,
                    prot: 3,
                    ..Default::default()
                },
                Vma {
                    start: 0x5000,
                    end: 0x6000,
                    prot: 3,
                    ..Default::default()
                },
            ],
            threads: vec![Thread {
                tid: 7,
                ..Default::default()
            }],
            ..Default::default()
        }],
        root_pid: 7,
        ..Default::default()
    };
    w.finish(img).unwrap()
}
