mod common;

use ckpt_image::*;
use common::*;

fn reader(bytes: &[u8]) -> ImageReader<&[u8]> {
    ImageReader::new(bytes).unwrap()
}

#[test]
fn rich_model_round_trips() {
    for c in [
        Compression::None,
        Compression::Fast,
        Compression::Zstd,
        Compression::Best,
    ] {
        let bytes = rich_bytes(c);
        let r = reader(&bytes);
        assert_eq!(r.format_version(), (FORMAT_MAJOR, FORMAT_MINOR));
        let img = r.image();
        assert_eq!(img.format_major, FORMAT_MAJOR);
        // Everything but memory runs and frames is exactly what was given.
        let blobs = match (&img.files[1].kind, &img.files[13].kind) {
            (FileKind::Regular(r), FileKind::MemFd(m)) => (r.contents.clone(), m.contents.clone()),
            k => panic!("unexpected kinds {k:?}"),
        };
        let mut expected = rich_model(blobs.0, blobs.1);
        expected.format_major = FORMAT_MAJOR;
        expected.format_minor = FORMAT_MINOR;
        expected.frames = img.frames.clone();
        for (p, q) in expected.processes.iter_mut().zip(&img.processes) {
            p.memory = q.memory.clone();
        }
        assert_eq!(img, &expected);
        // the metadata bytes decode the same through the public JSON path
        let json = json::metadata_to_json(r.metadata_bytes()).unwrap();
        assert_eq!(json["processes"][0]["pid"], 100);
        if c == Compression::None {
            assert!(img.frames.iter().all(|f| f.codec == Codec::None));
        } else {
            let want = if c == Compression::Fast {
                Codec::Lz4
            } else {
                Codec::Zstd
            };
            assert!(img.frames.iter().any(|f| f.codec == want));
        }
    }
}

#[test]
fn runs_are_coalesced_and_zero_pages_not_stored() {
    let bytes = rich_bytes(Compression::Fast);
    let r = reader(&bytes);
    let p = r.image().process(100).unwrap();
    // anon: pages 0-2 data, 3-4 zero, 5-9 data, 10 zero, 11-15 data;
    // frames of 4 pages split the data runs.
    let anon: Vec<_> = p.memory.iter().filter(|m| m.start < FILEMAP).collect();
    let zero: Vec<_> = anon
        .iter()
        .filter(|m| m.kind == RunKind::Zero)
        .map(|m| (m.start, m.pages))
        .collect();
    assert_eq!(zero, vec![(ANON + 3 * PS, 2), (ANON + 10 * PS, 1)]);
    let data_pages: u32 = anon
        .iter()
        .filter(|m| m.kind == RunKind::Data)
        .map(|m| m.pages)
        .sum();
    assert_eq!(data_pages, 13);
    assert!(anon.iter().all(|m| m.pages <= 4));
    let p200 = r.image().process(200).unwrap();
    assert_eq!(
        p200.memory
            .iter()
            .map(|m| (m.start, m.pages, m.kind))
            .collect::<Vec<_>>(),
        vec![
            (ANON, 5, RunKind::Zero),
            (ANON + 5 * PS, 1, RunKind::Data),
            (ANON + 6 * PS, 2, RunKind::Zero)
        ]
    );
    let decoded: u64 = r.image().frames.iter().map(|f| u64::from(f.size)).sum();
    // 13 + 1 (file) + 2 (heap) + 1 (stack) + 1 (pid 200) data pages, plus blobs
    assert_eq!(decoded, 18 * PS + 10_000 + 2 * PS);
}

#[test]
fn read_memory_at_any_granularity() {
    let bytes = rich_bytes(Compression::Fast);
    let r = reader(&bytes);
    let anon = anon_contents();
    // whole vma at once (crosses frames and zero runs)
    let mut buf = vec![0u8; anon.len()];
    r.read_memory(100, ANON, &mut buf).unwrap();
    assert_eq!(buf, anon);
    // every sub-page window of odd size and alignment
    for start in (0..anon.len() - 1).step_by(1237) {
        for len in [1usize, 7, 4095, 4097, 9000] {
            let len = len.min(anon.len() - start);
            let mut b = vec![0xEEu8; len];
            r.read_memory(100, ANON + start as u64, &mut b).unwrap();
            assert_eq!(b, &anon[start..start + len], "at {start} len {len}");
        }
    }
    // heap: saved pages and zero pages without a run
    let mut heap = vec![0xEEu8; 4 * PS as usize];
    r.read_memory(100, HEAP, &mut heap).unwrap();
    let p = PS as usize;
    assert_eq!(&heap[..p], &pattern(6, p)[..]);
    assert!(heap[p..2 * p].iter().all(|&b| b == 0));
    assert_eq!(&heap[2 * p..3 * p], &pattern(7, p)[..]);
    assert!(heap[3 * p..].iter().all(|&b| b == 0));
    // a saved page inside a file mapping
    let mut page = vec![0u8; p];
    r.read_memory(100, FILEMAP + PS, &mut page).unwrap();
    assert_eq!(page, pattern(5, p));
    // pid 200: shared anonymous
    let mut sh = vec![0xEEu8; 8 * p];
    r.read_memory(200, ANON, &mut sh).unwrap();
    assert!(sh[..5 * p].iter().all(|&b| b == 0));
    assert_eq!(&sh[5 * p..6 * p], &pattern(9, p)[..]);
    // zero-length read anywhere is fine
    r.read_memory(100, 0, &mut []).unwrap();
}

#[test]
fn read_memory_errors() {
    let bytes = rich_bytes(Compression::Fast);
    let r = reader(&bytes);
    let mut b = [0u8; 16];
    match r.read_memory(100, 0x1000, &mut b) {
        Err(Error::Unmapped {
            pid: 100,
            addr: 0x1000,
        }) => {}
        e => panic!("{e:?}"),
    }
    // runs off the end of the anonymous vma into the gap
    let mut big = vec![0u8; 17 * PS as usize];
    match r.read_memory(100, ANON, &mut big) {
        Err(Error::Unmapped { pid: 100, addr }) => assert_eq!(addr, ANON + 16 * PS),
        e => panic!("{e:?}"),
    }
    // file-backed page that was not saved
    match r.read_memory(100, FILEMAP + 2 * PS + 5, &mut b) {
        Err(e @ Error::NotSaved { pid: 100, addr, .. }) => {
            assert_eq!(addr, FILEMAP + 2 * PS + 5);
            assert!(e.to_string().contains("0x42005"), "{e}");
        }
        e => panic!("{e:?}"),
    }
    // vdso and memfd mappings without runs: not saved
    assert!(matches!(
        r.read_memory(100, VDSO, &mut b),
        Err(Error::NotSaved { .. })
    ));
    assert!(matches!(
        r.read_memory(100, SHM, &mut b),
        Err(Error::NotSaved { .. })
    ));
    assert!(matches!(
        r.read_memory(999, ANON, &mut b),
        Err(Error::NoSuchProcess { pid: 999 })
    ));
    // an address range that wraps
    assert!(r.read_memory(100, u64::MAX - 3, &mut b).is_err());
}

#[test]
fn for_each_run_and_blobs() {
    let bytes = rich_bytes(Compression::Fast);
    let r = reader(&bytes);
    let anon = anon_contents();
    let mut seen = 0u64;
    let mut last = 0;
    r.for_each_run(100, |run, data| {
        assert!(run.start >= last);
        last = run.start;
        let len = u64::from(run.pages) * PS;
        match data {
            None => assert_eq!(run.kind, RunKind::Zero),
            Some(d) => {
                assert_eq!(d.len() as u64, len);
                if run.start < FILEMAP {
                    let o = (run.start - ANON) as usize;
                    assert_eq!(d, &anon[o..o + d.len()]);
                }
            }
        }
        seen += len;
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, 16 * PS + PS + 2 * PS + PS);
    // errors from the callback stop the iteration and come back
    let mut calls = 0;
    let e = r.for_each_run(100, |_, _| {
        calls += 1;
        Err(Error::InvalidArgument("stop".into()))
    });
    assert!(e.is_err());
    assert_eq!(calls, 1);
    // blobs
    let img = r.image();
    let FileKind::Regular(reg) = &img.files[1].kind else {
        panic!()
    };
    assert_eq!(r.read_blob(&reg.contents).unwrap(), deleted_contents());
    let FileKind::MemFd(m) = &img.files[13].kind else {
        panic!()
    };
    assert_eq!(r.read_blob(&m.contents).unwrap(), memfd_contents());
    assert_eq!(r.read_blob(&Blob::default()).unwrap(), Vec::<u8>::new());
    // frames
    for i in 0..img.frames.len() as u32 {
        assert_eq!(
            r.read_frame(i).unwrap().len(),
            img.frames[i as usize].size as usize
        );
    }
    assert!(r.read_frame(img.frames.len() as u32).is_err());
}

/// A Write that is not seekable and takes odd-sized chunks, like a pipe.
struct Pipe {
    data: Vec<u8>,
    max: usize,
}
impl std::io::Write for Pipe {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = b.len().min(self.max);
        self.data.extend_from_slice(&b[..n]);
        self.max = self.max % 7919 + 13;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn streams_into_a_pipe_and_a_socket() {
    let p = write_rich(
        Pipe {
            data: Vec::new(),
            max: 1,
        },
        WriteOptions::default(),
    );
    let r = reader(&p.data);
    assert_eq!(r.image().processes.len(), 2);
    let expected = write_rich(Vec::new(), WriteOptions::default());
    assert_eq!(p.data, expected, "output does not depend on the sink");

    // A socket read by another thread.
    let (rd, wr) = std::os::unix::net::UnixStream::pair().unwrap();
    let t = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut { rd }, &mut v).unwrap();
        v
    });
    drop(write_rich(wr, WriteOptions::default()));
    let got = t.join().unwrap();
    assert_eq!(got, expected);
}

#[test]
fn writer_rejects_bad_input() {
    let mut w = ImageWriter::new(Vec::new(), WriteOptions::default()).unwrap();
    assert!(w.add_pages(1, 0x1001, &[0u8; 4096]).is_err());
    assert!(w.add_pages(1, 0x1000, &[0u8; 100]).is_err());
    w.add_pages(1, 0x2000, &[1u8; 4096]).unwrap();
    // Any order is fine; the same page twice is not (at finish).
    w.add_pages(1, 0x1000, &[1u8; 4096]).unwrap();
    assert_eq!(w.bytes_in(), 8192);
    assert!(w.bytes_out() >= 32);
    // pages of a pid that is not in the image
    let e = w.finish(Image::default()).unwrap_err();
    assert!(e.to_string().contains("pid 1"), "{e}");
    for ps in [0, 1000, 2048, 1 << 17] {
        assert!(ImageWriter::new(
            Vec::new(),
            WriteOptions {
                page_size: ps,
                ..Default::default()
            }
        )
        .is_err());
    }
    // runs outside any vma are refused at finish
    let mut w = ImageWriter::new(Vec::new(), WriteOptions::default()).unwrap();
    w.add_pages(1, 0x2000, &[1u8; 4096]).unwrap();
    let img = Image {
        processes: vec![Process {
            pid: 1,
            ..Default::default()
        }],
        ..Default::default()
    };
    let e = w.finish(img).unwrap_err();
    assert!(e.to_string().contains("not inside a vma"), "{e}");
}

#[test]
fn atomic_file_commit_and_drop() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("atomic");
    let path = dir.join("a.ckpt");
    let mut f = AtomicFile::create(&path).unwrap();
    f.write_all(b"partial").unwrap();
    drop(f);
    assert!(!path.exists());
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "temp file removed"
    );
    let f = AtomicFile::create(&path).unwrap();
    let f = write_rich(f, WriteOptions::default());
    f.commit().unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    let r = ImageReader::open(&path).unwrap();
    assert_eq!(r.image().root_pid, 100);
}

#[test]
fn summary_mentions_everything() {
    let bytes = rich_bytes(Compression::Fast);
    let r = reader(&bytes);
    let s = summary::render(r.image());
    for needle in [
        "format 1.2",
        "ckpt 0.1.0 (test)",
        "2023-11-14T22:13:20Z",
        "testhost",
        "6.1.0-test",
        "GenuineIntel",
        "page size: 4096",
        "process 100",
        "process 200",
        "/usr/bin/rich",
        "cmdline: rich --flag \\xff\\xfe\\x00A",
        "\"worker\\x01\"",
        "cloexec",
        "/tmp/",
        "tid 100",
        "tid 101",
        "rip 0x0000000000010123",
        "6 vmas",
        "tty",
        "memfd",
        "inet-socket",
        "SIGINT ignored",
        "SIGUSR1 handler 0x10400",
        "pending SIGALRM",
        "pending SIGUSR1",
    ] {
        assert!(s.contains(needle), "summary lacks {needle:?}:\n{s}");
    }
}

#[test]
fn iso_dates() {
    assert_eq!(summary::iso8601_utc(0), "1970-01-01T00:00:00Z");
    assert_eq!(
        summary::iso8601_utc(951_782_400_000_000_001),
        "2000-02-29T00:00:00.000000001Z"
    );
    assert_eq!(summary::iso8601_utc(-1_000_000_000), "1969-12-31T23:59:59Z");
    let _ = summary::iso8601_utc(i64::MIN);
    let _ = summary::iso8601_utc(i64::MAX);
}

/// The AIO ring and packet ring backings, hugetlb page sizes and hung-up
/// terminals (1.2) come back as written.
#[test]
fn aio_rings_hugetlb_and_hung_up_ttys_round_trip() {
    let mut w = ImageWriter::new(Vec::new(), WriteOptions::default()).unwrap();
    w.add_pages(7, 0x1000, &[7u8; 4096]).unwrap();
    let img = Image {
        processes: vec![Process {
            pid: 7,
            vmas: vec![
                Vma {
                    start: 0x1000,
                    end: 0x2000,
                    prot: 3,
                    shared: true,
                    backing: VmaBacking::AioRing(AioRing {
                        nr: 127,
                        head: 3,
                        tail: 120,
                    }),
                    ..Default::default()
                },
                Vma {
                    start: 0x20_0000,
                    end: 0x40_0000,
                    prot: 3,
                    huge_page_size: 2 << 20,
                    ..Default::default()
                },
                Vma {
                    start: 0x50_0000,
                    end: 0x50_4000,
                    prot: 3,
                    shared: true,
                    backing: VmaBacking::PacketRing,
                    name: b"socket:[1234]".to_vec(),
                    ..Default::default()
                },
            ],
            threads: vec![Thread {
                tid: 7,
                ..Default::default()
            }],
            ..Default::default()
        }],
        files: vec![
            OpenFile {
                id: 1,
                kind: FileKind::Tty(Tty {
                    index: 4,
                    rdev: 0x8804,
                    role: TtyRole::Slave,
                    hung_up: true,
                    ..Default::default()
                }),
                ..Default::default()
            },
            OpenFile {
                id: 2,
                kind: FileKind::MemFd(MemFd {
                    name: b"big".to_vec(),
                    huge_page_size: 2 << 20,
                    ..Default::default()
                }),
                ..Default::default()
            },
        ],
        root_pid: 7,
        ..Default::default()
    };
    let bytes = w.finish(img.clone()).unwrap();
    let back = reader(&bytes).image().clone();
    assert_eq!(back.processes[0].vmas, img.processes[0].vmas);
    assert_eq!(back.files, img.files);
}
