//! The container byte layout (spec/format.md): file header, CRC-checked
//! records, commit records, and locating the last complete commit.

use crate::{Error, ReadAt, Result, FORMAT_MAJOR};

pub(crate) const MAGIC: [u8; 8] = *b"CKPTIMG\0";
pub const HEADER_LEN: u64 = 32;
pub(crate) const RECORD_MAGIC: [u8; 4] = *b"CKRC";
pub(crate) const RECORD_HEADER_LEN: u64 = 24;
pub(crate) const COMMIT_MAGIC: [u8; 8] = *b"CKPTEND\0";
pub(crate) const COMMIT_PAYLOAD_LEN: u64 = 40;
pub const COMMIT_RECORD_LEN: u64 = RECORD_HEADER_LEN + COMMIT_PAYLOAD_LEN;

pub(crate) const KIND_FRAME: u32 = 1;
pub const KIND_METADATA: u32 = 2;
pub(crate) const KIND_COMMIT: u32 = 3;

/// Largest metadata message a reader accepts.
pub(crate) const MAX_METADATA: u64 = 1 << 30;
/// Largest frame (stored or decoded) a reader accepts.
pub(crate) const MAX_FRAME: u64 = 64 << 20;
/// Largest payload of a record of an unknown kind that a scan skips over
/// (larger ones are taken as corruption).
pub(crate) const MAX_RECORD: u64 = 1 << 40;

pub(crate) fn kind_name(kind: u32) -> &'static str {
    match kind {
        KIND_FRAME => "frame",
        KIND_METADATA => "metadata",
        KIND_COMMIT => "commit",
        _ => "unknown",
    }
}

pub fn pad8(n: u64) -> u64 {
    (8 - (n % 8)) % 8
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn le64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// The 32-byte file header.
pub fn encode_header(major: u16, minor: u16) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&major.to_le_bytes());
    h[10..12].copy_from_slice(&minor.to_le_bytes());
    // flags (12..16) and reserved (16..28) are zero
    let crc = crc32fast::hash(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Check the file header; returns (major, minor).
pub(crate) fn parse_header(src: &dyn ReadAt, file_len: u64) -> Result<(u16, u16)> {
    if file_len < HEADER_LEN {
        return Err(Error::Truncated {
            what: "file header".into(),
            offset: 0,
            need: HEADER_LEN,
            len: file_len,
        });
    }
    let mut h = [0u8; 32];
    src.read_at(&mut h, 0)?;
    if h[0..8] != MAGIC {
        let mut found = [0u8; 8];
        found.copy_from_slice(&h[0..8]);
        return Err(Error::BadMagic { found });
    }
    let stored = le32(&h, 28);
    let actual = crc32fast::hash(&h[0..28]);
    if stored != actual {
        return Err(Error::Checksum {
            what: "file header".into(),
            offset: 0,
            stored,
            actual,
        });
    }
    let (major, minor) = (le16(&h, 8), le16(&h, 10));
    if major != FORMAT_MAJOR {
        return Err(Error::UnsupportedVersion {
            major,
            minor,
            supported: FORMAT_MAJOR,
        });
    }
    Ok((major, minor))
}

/// The 24-byte header of a record with payload `payload`.
pub fn encode_record_header(kind: u32, payload: &[u8]) -> [u8; 24] {
    encode_record_header_crc(kind, payload.len() as u64, crc32fast::hash(payload))
}

pub fn encode_record_header_crc(kind: u32, len: u64, payload_crc: u32) -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&RECORD_MAGIC);
    h[4..8].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&len.to_le_bytes());
    h[16..20].copy_from_slice(&payload_crc.to_le_bytes());
    let crc = crc32fast::hash(&h[0..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A record header read back.
#[derive(Clone, Copy, Debug)]
pub struct RecordHeader {
    /// File offset of the header.
    pub offset: u64,
    pub kind: u32,
    pub len: u64,
    pub payload_crc: u32,
}

impl RecordHeader {
    pub fn payload_offset(&self) -> u64 {
        self.offset + RECORD_HEADER_LEN
    }
    /// Offset just past the record and its padding (None on overflow).
    pub fn end(&self) -> Option<u64> {
        self.payload_offset()
            .checked_add(self.len)?
            .checked_add(pad8(self.len))
    }
}

/// Read and check the record header at `offset` (header CRC, magic, that the
/// payload fits in the file).
pub fn read_record_header(src: &dyn ReadAt, offset: u64, file_len: u64) -> Result<RecordHeader> {
    if offset % 8 != 0 {
        return Err(Error::Corrupt {
            offset,
            what: "record is not 8-byte aligned".into(),
        });
    }
    let need_end = offset.checked_add(RECORD_HEADER_LEN);
    if need_end.map_or(true, |e| e > file_len) {
        return Err(Error::Truncated {
            what: "record header".into(),
            offset,
            need: RECORD_HEADER_LEN,
            len: file_len,
        });
    }
    let mut h = [0u8; 24];
    src.read_at(&mut h, offset)?;
    if h[0..4] != RECORD_MAGIC {
        return Err(Error::Corrupt {
            offset,
            what: format!("bad record magic {:02x?} (expected \"CKRC\")", &h[0..4]),
        });
    }
    let stored = le32(&h, 20);
    let actual = crc32fast::hash(&h[0..20]);
    if stored != actual {
        return Err(Error::Checksum {
            what: "record header".into(),
            offset,
            stored,
            actual,
        });
    }
    let r = RecordHeader {
        offset,
        kind: le32(&h, 4),
        len: le64(&h, 8),
        payload_crc: le32(&h, 16),
    };
    let end = r.payload_offset().checked_add(r.len);
    if r.len > MAX_RECORD || end.map_or(true, |e| e > file_len) {
        return Err(Error::Truncated {
            what: format!("{} record payload", kind_name(r.kind)),
            offset: r.payload_offset(),
            need: r.len,
            len: file_len,
        });
    }
    Ok(r)
}

/// Read a record's payload (at most `limit` bytes) and check its CRC.
pub(crate) fn read_payload(src: &dyn ReadAt, r: &RecordHeader, limit: u64) -> Result<Vec<u8>> {
    if r.len > limit {
        return Err(Error::Limit {
            what: format!(
                "{} record at offset {} payload",
                kind_name(r.kind),
                r.offset
            ),
            value: r.len,
            limit,
        });
    }
    let mut buf = vec![0u8; r.len as usize];
    src.read_at(&mut buf, r.payload_offset())?;
    let actual = crc32fast::hash(&buf);
    if actual != r.payload_crc {
        return Err(Error::Checksum {
            what: format!("{} record payload", kind_name(r.kind)),
            offset: r.payload_offset(),
            stored: r.payload_crc,
            actual,
        });
    }
    Ok(buf)
}

/// The payload of a commit record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Commit {
    /// File offset of the metadata record's header.
    pub metadata_offset: u64,
    pub metadata_len: u64,
    pub generation: u64,
    /// Offset just past the commit record: the committed length of the file.
    pub end: u64,
}

pub(crate) fn encode_commit(c: &Commit) -> [u8; 40] {
    let mut p = [0u8; 40];
    p[0..8].copy_from_slice(&c.metadata_offset.to_le_bytes());
    p[8..16].copy_from_slice(&c.metadata_len.to_le_bytes());
    p[16..24].copy_from_slice(&c.generation.to_le_bytes());
    p[24..32].copy_from_slice(&c.end.to_le_bytes());
    p[32..40].copy_from_slice(&COMMIT_MAGIC);
    p
}

/// The whole 64-byte commit record.
pub fn encode_commit_record(c: &Commit) -> [u8; 64] {
    let payload = encode_commit(c);
    let mut r = [0u8; 64];
    r[0..24].copy_from_slice(&encode_record_header(KIND_COMMIT, &payload));
    r[24..64].copy_from_slice(&payload);
    r
}

/// Parse and check a commit record given its header: payload CRC, magic,
/// and that `end` is the end of this very record.
fn parse_commit(src: &dyn ReadAt, r: &RecordHeader) -> Result<Commit> {
    if r.kind != KIND_COMMIT || r.len != COMMIT_PAYLOAD_LEN {
        return Err(Error::Corrupt {
            offset: r.offset,
            what: format!(
                "expected a commit record (kind 3, 40 bytes), found kind {} ({}) of {} bytes",
                r.kind,
                kind_name(r.kind),
                r.len
            ),
        });
    }
    let p = read_payload(src, r, COMMIT_PAYLOAD_LEN)?;
    if p[32..40] != COMMIT_MAGIC {
        return Err(Error::Corrupt {
            offset: r.payload_offset() + 32,
            what: "commit record without the CKPTEND magic".into(),
        });
    }
    let c = Commit {
        metadata_offset: le64(&p, 0),
        metadata_len: le64(&p, 8),
        generation: le64(&p, 16),
        end: le64(&p, 24),
    };
    if c.end != r.offset + COMMIT_RECORD_LEN {
        return Err(Error::Corrupt {
            offset: r.payload_offset() + 24,
            what: format!(
                "commit record says it ends at {} but it ends at {}",
                c.end,
                r.offset + COMMIT_RECORD_LEN
            ),
        });
    }
    if c.metadata_offset < HEADER_LEN
        || c.metadata_offset % 8 != 0
        || c.metadata_offset
            .checked_add(RECORD_HEADER_LEN + c.metadata_len)
            .map_or(true, |e| e > r.offset)
    {
        return Err(Error::Corrupt {
            offset: r.payload_offset(),
            what: format!(
                "commit record points at metadata record {}+{} which is not before the commit at {}",
                c.metadata_offset, c.metadata_len, r.offset
            ),
        });
    }
    Ok(c)
}

/// The metadata a commit points at: record header checked, payload read and
/// CRC-checked.
pub(crate) fn read_committed_metadata(
    src: &dyn ReadAt,
    c: &Commit,
    file_len: u64,
) -> Result<Vec<u8>> {
    let r = read_record_header(src, c.metadata_offset, file_len)?;
    if r.kind != KIND_METADATA || r.len != c.metadata_len {
        return Err(Error::Corrupt {
            offset: c.metadata_offset,
            what: format!(
                "commit points at a metadata record of {} bytes, found kind {} ({}) of {} bytes",
                c.metadata_len,
                r.kind,
                kind_name(r.kind),
                r.len
            ),
        });
    }
    let limit = MAX_METADATA.min(file_len);
    read_payload(src, &r, limit)
}

/// Where the last complete commit is, and its metadata.
pub(crate) struct Found {
    pub commit: Commit,
    pub metadata: Vec<u8>,
    /// True when the file ends with the commit (no torn tail).
    pub clean: bool,
}

/// Find the last complete commit: fast path = the trailing 64 bytes; else a
/// forward scan over the records keeping the last commit whose metadata is
/// intact (a torn append after it is ignored).
pub(crate) fn find_commit(src: &dyn ReadAt, file_len: u64) -> Result<Found> {
    // Fast path.
    if file_len >= HEADER_LEN + COMMIT_RECORD_LEN {
        let off = file_len - COMMIT_RECORD_LEN;
        if off % 8 == 0 {
            if let Ok(r) = read_record_header(src, off, file_len) {
                if let Ok(c) = parse_commit(src, &r) {
                    if c.end == file_len {
                        // A trailing commit whose metadata is damaged is an
                        // error, not a reason to fall back to an older state.
                        let metadata = read_committed_metadata(src, &c, file_len)?;
                        return Ok(Found {
                            commit: c,
                            metadata,
                            clean: true,
                        });
                    }
                }
            }
        }
    }
    // Forward scan.
    let mut off = HEADER_LEN;
    let mut last: Option<Commit> = None;
    let mut first_error: Option<Error> = None;
    while off < file_len {
        let r = match read_record_header(src, off, file_len) {
            Ok(r) => r,
            Err(e) => {
                first_error = Some(e);
                break;
            }
        };
        if r.kind == KIND_COMMIT {
            match parse_commit(src, &r) {
                Ok(c) => last = Some(c),
                Err(e) => {
                    first_error = Some(e);
                    break;
                }
            }
        }
        match r.end() {
            Some(e) if e <= file_len => off = e,
            // payload complete but padding cut off: nothing follows
            _ => break,
        }
    }
    match last {
        Some(c) => {
            let metadata = read_committed_metadata(src, &c, file_len)?;
            Ok(Found {
                commit: c,
                metadata,
                clean: c.end == file_len,
            })
        }
        None => Err(Error::NoCommit {
            len: file_len,
            detail: match first_error {
                Some(e) => format!("scan stopped: {e}"),
                None => "no commit record in the file".into(),
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let h = encode_header(1, 0);
        assert_eq!(&h[..8], b"CKPTIMG\0");
        assert_eq!(&h[8..12], &[1, 0, 0, 0]);
        assert!(h[12..28].iter().all(|&b| b == 0));
        assert_eq!(
            u32::from_le_bytes(h[28..32].try_into().unwrap()),
            crc32fast::hash(&h[..28])
        );
        assert_eq!(parse_header(&&h[..], 32).unwrap(), (1, 0));
        assert!(matches!(
            parse_header(&encode_header(2, 3).to_vec(), 32),
            Err(Error::UnsupportedVersion {
                major: 2,
                minor: 3,
                ..
            })
        ));
    }

    #[test]
    fn record_and_commit_layout() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        let h = encode_record_header(KIND_METADATA, b"abc");
        assert_eq!(&h[..4], b"CKRC");
        assert_eq!(u32::from_le_bytes(h[4..8].try_into().unwrap()), 2);
        assert_eq!(u64::from_le_bytes(h[8..16].try_into().unwrap()), 3);
        assert_eq!(
            u32::from_le_bytes(h[16..20].try_into().unwrap()),
            crc32fast::hash(b"abc")
        );
        assert_eq!(
            u32::from_le_bytes(h[20..24].try_into().unwrap()),
            crc32fast::hash(&h[..20])
        );
        let c = Commit {
            metadata_offset: 32,
            metadata_len: 3,
            generation: 5,
            end: 128,
        };
        let r = encode_commit_record(&c);
        assert_eq!(&r[56..64], b"CKPTEND\0");
        assert_eq!(u64::from_le_bytes(r[48..56].try_into().unwrap()), 128);
        assert_eq!(
            (0..17).map(pad8).collect::<Vec<_>>(),
            [0, 7, 6, 5, 4, 3, 2, 1, 0, 7, 6, 5, 4, 3, 2, 1, 0]
        );
    }
}
