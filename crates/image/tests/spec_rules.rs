//! Rules of spec/format.md that a reader checks: the generation of the
//! metadata and of its commit record, the metadata payload being exactly
//! one message, and why a page is not in the image.

mod common;

use ckpt_image::fuzzing::container::{
    encode_commit_record, encode_record_header, pad8, Commit, COMMIT_RECORD_LEN, KIND_METADATA,
};
use ckpt_image::*;
use common::*;

fn le(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().unwrap())
}

/// The commit of a file that ends with one.
fn last_commit(bytes: &[u8]) -> Commit {
    let p = &bytes[bytes.len() - COMMIT_RECORD_LEN as usize + 24..];
    Commit {
        metadata_offset: le(p, 0),
        metadata_len: le(p, 8),
        generation: le(p, 16),
        end: le(p, 24),
    }
}

/// The image with its metadata payload replaced by `f(payload)`.
fn with_payload(bytes: &[u8], f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let c = last_commit(bytes);
    let start = c.metadata_offset as usize;
    let mut payload = bytes[start + 24..start + 24 + c.metadata_len as usize].to_vec();
    f(&mut payload);
    let mut out = bytes[..start].to_vec();
    out.extend_from_slice(&encode_record_header(KIND_METADATA, &payload));
    out.extend_from_slice(&payload);
    out.resize(out.len() + pad8(payload.len() as u64) as usize, 0);
    let end = out.len() as u64 + COMMIT_RECORD_LEN;
    out.extend_from_slice(&encode_commit_record(&Commit {
        metadata_offset: c.metadata_offset,
        metadata_len: payload.len() as u64,
        generation: c.generation,
        end,
    }));
    out
}

#[test]
fn the_metadata_payload_is_exactly_one_message() {
    let good = rich_bytes(Compression::Fast);
    assert!(ImageReader::new(with_payload(&good, |_| {})).is_ok());
    let e = ImageReader::new(with_payload(&good, |p| p.extend_from_slice(&[0; 8])))
        .err()
        .expect("bytes after the message are refused")
        .to_string();
    assert!(e.contains("8 bytes follow the metadata message"), "{e}");
    let e = ImageReader::new(with_payload(&good, |p| p.extend_from_slice(&[0; 3])))
        .err()
        .expect("a payload of part of a word is refused")
        .to_string();
    assert!(e.contains("not a whole number of 8-byte words"), "{e}");
}

#[test]
fn the_generation_must_match_the_commit_record() {
    let mut bytes = rich_bytes(Compression::Fast);
    let n = bytes.len();
    let off = n - COMMIT_RECORD_LEN as usize;
    let c = Commit {
        generation: 5,
        ..last_commit(&bytes)
    };
    bytes[off..].copy_from_slice(&encode_commit_record(&c));
    let e = ImageReader::new(bytes.clone())
        .err()
        .expect("a mismatch is refused");
    assert!(
        e.to_string()
            .contains("the commit record says generation 5 but its metadata says 0"),
        "{e}"
    );
    // Over 2^32 - 1 it cannot match the UInt32 field either.
    let c = Commit {
        generation: 1 << 32,
        ..c
    };
    bytes[off..].copy_from_slice(&encode_commit_record(&c));
    assert!(ImageReader::new(bytes).is_err());
}

#[test]
fn unsaved_pages_say_why() {
    let r = ImageReader::new(rich_bytes(Compression::Fast)).unwrap();
    let mut b = [0u8; 8];
    let e = r.read_memory(100, VDSO, &mut b).unwrap_err().to_string();
    assert!(
        e.contains("[vdso] is provided by the kernel, never saved in an image"),
        "{e}"
    );
    assert!(!e.contains("backed by a file"), "{e}");
    let e = r.read_memory(100, FILEMAP, &mut b).unwrap_err().to_string();
    assert!(e.contains("left to the file by the dump"), "{e}");
}
