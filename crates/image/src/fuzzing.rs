//! The body of the `reader` fuzz target (fuzz/), shared with the stable
//! mutation test so that both exercise the same paths.

use crate::{json, summary, ImageReader, RunKind};

/// The container's record encoders and record-header reader, for tests
/// that forge hostile files byte by byte (crates/image/tests, tests/e2e);
/// the layout itself is private to this crate (spec/format.md documents it).
pub mod container {
    pub use crate::container::{
        encode_commit_record, encode_header, encode_record_header, encode_record_header_crc, pad8,
        read_record_header, Commit, RecordHeader, COMMIT_RECORD_LEN, HEADER_LEN, KIND_METADATA,
    };
}

/// Bytes of memory read per image at most (the VMA sizes are the input's).
const READ_BUDGET: u64 = 1 << 20;
/// Frames larger than this in total are not decoded as a whole.
const DECODE_BUDGET: u64 = 16 << 20;

/// Parse `data` as an image and, if it opens, touch everything a consumer
/// would: JSON, summary, memory of every VMA (bounded), every run, blob and
/// frame. Must never panic, hang or allocate without bound; returns whether
/// the image opened.
pub fn reader_body(data: &[u8]) -> bool {
    let Ok(r) = ImageReader::new(data) else {
        // Whatever the reader refuses must not trip JSON either.
        let _ = json::metadata_to_json(data);
        return false;
    };
    let img = r.image();
    let _ = json::metadata_to_json(r.metadata_bytes()).map(|v| v.to_string());
    let _ = summary::render(img);
    let mut budget = READ_BUDGET;
    let mut buf = vec![0u8; 3 * 4096 + 17];
    for p in &img.processes {
        for v in &p.vmas {
            // The first bytes, a window around the end, an unaligned window.
            for start in [
                v.start,
                v.end.saturating_sub(5000),
                v.start.saturating_add(4095),
            ] {
                if budget == 0 {
                    break;
                }
                let n = (buf.len() as u64)
                    .min(budget)
                    .min(v.end.saturating_sub(start)) as usize;
                budget -= n as u64;
                let _ = r.read_memory(p.pid, start, &mut buf[..n]);
            }
        }
    }
    let decoded: u64 = img.frames.iter().map(|f| u64::from(f.size)).sum();
    if decoded <= DECODE_BUDGET {
        for p in &img.processes {
            let _ = r.for_each_run(p.pid, |run, bytes| {
                debug_assert_eq!(bytes.is_none(), run.kind == RunKind::Zero);
                Ok(())
            });
        }
        for f in &img.files {
            match &f.kind {
                crate::FileKind::Regular(x) => drop(r.read_blob(&x.contents)),
                crate::FileKind::MemFd(x) => drop(r.read_blob(&x.contents)),
                _ => {}
            }
        }
        for i in 0..img.frames.len().min(1024) as u32 {
            let _ = r.read_frame(i);
        }
    }
    true
}

/// A small valid image: one process, three data pages in two frames, a zero
/// page (the seed of the fuzzers and of the mutation test).
pub fn sample_image() -> Vec<u8> {
    use crate::*;
    let mut w = ImageWriter::new(
        Vec::new(),
        WriteOptions {
            compression: Compression::Fast,
            page_size: 4096,
            frame_size: 2 * 4096,
        },
    )
    .expect("writer");
    let mut data: Vec<u8> = (0..3 * 4096usize)
        .map(|i| (i / 97) as u8 ^ (i % 5) as u8)
        .collect();
    data[4096..2 * 4096].fill(0);
    let blob = w.add_blob(b"deleted file contents").expect("blob");
    w.add_pages(7, 0x1000, &data).expect("pages");
    w.add_pages(7, 0x5000, &[0xAB; 4096]).expect("pages");
    let img = Image {
        tool_version: "sample".into(),
        created_ns: 1,
        host: HostInfo {
            page_size: 4096,
            arch: Arch::X8664,
            ..Default::default()
        },
        processes: vec![Process {
            pid: 7,
            comm: b"sample".to_vec(),
            cmdline: vec![b"sample".to_vec(), vec![0xff, 0]],
            vmas: vec![
                Vma {
                    start: 0x1000,
                    end: 0x4000,
                    prot: 3,
                    ..Default::default()
                },
                Vma {
                    start: 0x5000,
                    end: 0x7000,
                    prot: 1,
                    backing: VmaBacking::File(FileMapping::default()),
                    ..Default::default()
                },
            ],
            fds: vec![Fd {
                fd: 0,
                cloexec: false,
                file: 1,
            }],
            threads: vec![Thread {
                tid: 7,
                regs: Registers::X8664(X8664Regs {
                    rip: 0x1234,
                    xsave: vec![1; 64],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            sigactions: vec![
                SigAction {
                    handler: 0x1000,
                    ..Default::default()
                };
                3
            ],
            ..Default::default()
        }],
        files: vec![OpenFile {
            id: 1,
            kind: FileKind::Regular(RegularFile {
                contents: blob,
                has_contents: true,
                ..Default::default()
            }),
            ..Default::default()
        }],
        root_pid: 7,
        ..Default::default()
    };
    w.finish(img).expect("finish")
}

/// Split a valid image into (header + frame records, metadata payload).
pub fn split_metadata(image: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let tail = image.get(image.len().checked_sub(40)?..)?;
    let off = u64::from_le_bytes(tail[..8].try_into().ok()?) as usize;
    let len = u64::from_le_bytes(tail[8..16].try_into().ok()?) as usize;
    let meta = image.get(off + 24..off + 24 + len)?.to_vec();
    Some((image.get(..off)?.to_vec(), meta))
}

/// `prefix` (header + frame records) followed by a metadata record holding
/// `meta` and a commit: lets a fuzzer reach the metadata decoder and the
/// validation without having to forge CRCs.
pub fn with_metadata(prefix: &[u8], meta: &[u8]) -> Vec<u8> {
    use crate::container::*;
    let mut f = prefix.to_vec();
    f.resize(f.len() + pad8(f.len() as u64) as usize, 0);
    let off = f.len() as u64;
    f.extend_from_slice(&encode_record_header(KIND_METADATA, meta));
    f.extend_from_slice(meta);
    f.resize(f.len() + pad8(meta.len() as u64) as usize, 0);
    let end = f.len() as u64 + COMMIT_RECORD_LEN;
    f.extend_from_slice(&encode_commit_record(&Commit {
        metadata_offset: off,
        metadata_len: meta.len() as u64,
        generation: 0,
        end,
    }));
    f
}

/// The body of the `metadata` fuzz target: `meta` as the metadata message
/// of the sample image's container.
pub fn metadata_body(meta: &[u8]) -> bool {
    static PREFIX: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let prefix = PREFIX.get_or_init(|| {
        split_metadata(&sample_image())
            .map(|p| p.0)
            .unwrap_or_default()
    });
    reader_body(&with_metadata(prefix, meta))
}
