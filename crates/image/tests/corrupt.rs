//! Hostile input: truncation, bit flips, bad magic/versions, giant counts.

mod common;

use ckpt_image::fuzzing::container::*;
use ckpt_image::*;
use common::*;

/// Everything a consumer would look at, or the first error.
fn touch_all(bytes: &[u8]) -> Result<(Vec<u8>, Vec<Vec<u8>>)> {
    let r = ImageReader::new(bytes)?;
    let mut mem = Vec::new();
    for p in &r.image().processes {
        for v in &p.vmas {
            let mut b = vec![0u8; (v.end - v.start) as usize];
            r.read_memory(p.pid, v.start, &mut b)?;
            mem.push(b);
        }
    }
    Ok((r.metadata_bytes().to_vec(), mem))
}

/// Byte ranges of the file that no checksum covers: record padding.
fn padding_ranges(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut off = HEADER_LEN;
    let len = bytes.len() as u64;
    while off < len {
        let h = read_record_header(&bytes, off, len).unwrap();
        let end = h.payload_offset() + h.len;
        out.push(end as usize..h.end().unwrap() as usize);
        off = h.end().unwrap();
    }
    out
}

#[test]
fn truncated_at_every_offset() {
    let bytes = small_bytes();
    assert!(bytes.len() < 4096, "small image is {} bytes", bytes.len());
    for cut in 0..bytes.len() {
        match ImageReader::new(&bytes[..cut]) {
            Err(_) => {}
            Ok(_) => panic!("truncated at {cut} of {} opened", bytes.len()),
        }
    }
    touch_all(&bytes).unwrap();
}

#[test]
fn every_single_bit_flip() {
    let bytes = small_bytes();
    let good = touch_all(&bytes).unwrap();
    let pads = padding_ranges(&bytes);
    let in_padding = |i: usize| pads.iter().any(|r| r.contains(&i));
    let mut undetected = 0;
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            match touch_all(&b) {
                Err(e) => {
                    // errors render and name a place
                    assert!(!e.to_string().is_empty());
                }
                Ok(got) => {
                    assert!(in_padding(i), "flip of bit {bit} at {i} went unnoticed");
                    assert!(got == good, "flip of bit {bit} at {i} changed the result");
                    undetected += 1;
                }
            }
        }
    }
    let pad_bytes: usize = pads.iter().map(|r| r.len()).sum();
    assert_eq!(undetected, pad_bytes * 8);
}

#[test]
fn wrong_magic_and_garbage() {
    let mut b = small_bytes();
    b[0] = b'X';
    let e = ImageReader::new(&b[..]).err().unwrap();
    assert!(matches!(e, Error::BadMagic { .. }), "{e}");
    assert!(e.to_string().contains("not a ckpt image"));
    for n in [0usize, 1, 31, 32, 100, 5000] {
        let junk: Vec<u8> = (0..n).map(|i| (i * 131 % 251) as u8).collect();
        assert!(ImageReader::new(junk).is_err());
    }
    // a valid header and nothing else
    let e = ImageReader::new(encode_header(1, 0).to_vec())
        .err()
        .unwrap();
    assert!(matches!(e, Error::NoCommit { .. }), "{e}");
}

#[test]
fn unknown_major_names_both_versions() {
    let mut b = small_bytes();
    b[..32].copy_from_slice(&encode_header(2, 0));
    let e = ImageReader::new(&b[..]).err().unwrap();
    assert_eq!(
        e.to_string(),
        "image format 2.0 is newer than this ckpt (reads 1.x)"
    );
    // a newer minor is accepted
    let mut b = small_bytes();
    b[..32].copy_from_slice(&encode_header(1, 7));
    let r = ImageReader::new(&b[..]).unwrap();
    assert_eq!(r.format_version(), (1, 7));
}

#[test]
fn editor_refuses_newer_minor() {
    let dir = TempDir::new("minor");
    let path = dir.join("m.ckpt");
    let mut b = small_bytes();
    b[..32].copy_from_slice(&encode_header(1, 3));
    std::fs::write(&path, &b).unwrap();
    let e = ImageEditor::open(&path).err().unwrap();
    assert!(e.to_string().contains("1.3"), "{e}");
}

/// A container with the given metadata message and no frames.
fn with_metadata(meta: &[u8]) -> Vec<u8> {
    let mut f = encode_header(1, 0).to_vec();
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

fn words(ws: &[u64]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&(ws.len() as u32).to_le_bytes());
    for w in ws {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v
}

#[test]
fn hostile_counts() {
    // Image { processes: List(Process) of 2^29-1 zero-sized structs }: 5 words.
    let root = 3u64 << 48; // struct ptr, offset 0, 0 data words, 3 pointers
    let list = 1 | (7u64 << 32); // list ptr, offset 0, inline composite, 0 words
    let tag = ((1u64 << 29) - 1) << 2; // element count, 0 data, 0 ptrs
    let meta = words(&[root, 0, 0, list, tag]);
    let t = std::time::Instant::now();
    let e = ImageReader::new(with_metadata(&meta)).err().unwrap();
    assert!(e.to_string().contains("metadata"), "{e}");
    assert!(json::metadata_to_json(&meta).is_err());
    assert!(t.elapsed().as_secs() < 2);

    // A segment table claiming 2^32-1 segments, or a giant first segment.
    let mut m = vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
    m.extend_from_slice(&[0u8; 64]);
    assert!(ImageReader::new(with_metadata(&m)).is_err());
    let m = [0u8, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0];
    assert!(ImageReader::new(with_metadata(&m)).is_err());
    assert!(json::metadata_to_json(&m).is_err());

    // A record header claiming a payload of 2^63 bytes.
    let mut b = encode_header(1, 0).to_vec();
    b.extend_from_slice(&encode_record_header_crc(KIND_METADATA, 1 << 63, 0));
    assert!(ImageReader::new(b).is_err());

    // Giant fields in an otherwise valid model are refused by validation.
    let base = ImageReader::new(small_bytes()).unwrap().image().clone();
    type Mutation = Box<dyn Fn(&mut Image)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("frame size", Box::new(|i| i.frames[0].size = u32::MAX)),
        (
            "frame offset",
            Box::new(|i| i.frames[0].offset = u64::MAX - 3),
        ),
        (
            "run pages",
            Box::new(|i| i.processes[0].memory[0].pages = u32::MAX),
        ),
        (
            "run frame",
            Box::new(|i| i.processes[0].memory[0].frame = 1000),
        ),
        (
            "frame offset in frame",
            Box::new(|i| i.processes[0].memory[0].frame_offset = u32::MAX),
        ),
        (
            "vma start >= end",
            Box::new(|i| i.processes[0].vmas[0].end = 0),
        ),
        (
            "overlapping vmas",
            Box::new(|i| i.processes[0].vmas[1].start = 0x2000),
        ),
        (
            "unsorted runs",
            Box::new(|i| i.processes[0].memory.reverse()),
        ),
        ("page size", Box::new(|i| i.host.page_size = 3000)),
        (
            "sigactions",
            Box::new(|i| i.processes[0].sigactions = vec![SigAction::default(); 65]),
        ),
        (
            "duplicate pid",
            Box::new(|i| i.processes.push(i.processes[0].clone())),
        ),
        (
            "duplicate tid",
            Box::new(|i| {
                let mut p = i.processes[0].clone();
                p.pid = 8;
                p.memory.clear();
                i.processes.push(p)
            }),
        ),
        (
            "unknown fd file",
            Box::new(|i| {
                i.processes[0].fds.push(Fd {
                    fd: 3,
                    cloexec: false,
                    file: 9,
                })
            }),
        ),
        (
            "blob",
            Box::new(|i| {
                i.files.push(OpenFile {
                    id: 1,
                    kind: FileKind::MemFd(MemFd {
                        contents: Blob {
                            size: u64::MAX,
                            frames: vec![0],
                        },
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            }),
        ),
        ("format major", Box::new(|i| i.format_major = 2)),
        (
            "pty pair without termios",
            Box::new(|i| {
                i.ptys.push(PtyPair {
                    id: 1,
                    ..Default::default()
                })
            }),
        ),
        (
            "tty naming a pair not in the image",
            Box::new(|i| {
                i.files.push(OpenFile {
                    id: 1,
                    kind: FileKind::Tty(Tty {
                        pair: 4,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            }),
        ),
        (
            "two pty pairs with one index",
            Box::new(|i| {
                let p = PtyPair {
                    id: 1,
                    termios: vec![0; 44],
                    ..Default::default()
                };
                i.ptys.push(p.clone());
                i.ptys.push(PtyPair { id: 2, ..p });
            }),
        ),
    ];
    let good = small_bytes();
    let meta_off = read_committed_offset(&good);
    for (name, f) in cases {
        let mut img = base.clone();
        f(&mut img);
        let e = validate(&img, meta_off)
            .err()
            .unwrap_or_else(|| panic!("{name}: accepted"));
        assert!(matches!(e, Error::Invalid(_)), "{name}: {e}");
    }
    validate(&base, meta_off).unwrap();
}

fn read_committed_offset(bytes: &[u8]) -> u64 {
    let tail = &bytes[bytes.len() - 40..];
    u64::from_le_bytes(tail[..8].try_into().unwrap())
}
