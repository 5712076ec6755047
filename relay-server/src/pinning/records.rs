//! The pinning relay's document file: what a document's updates look like on disk.
//!
//! ```text
//! file   = MAGIC record*            the first record holds the document's name (UTF-8)
//! record = len:u32le crc:u32le payload[len]   crc = CRC-32 (IEEE) of payload
//! ```
//!
//! Records are only appended (one Yjs v1 update each); compaction writes a new file holding
//! the name and the full state, and renames it over the old one. A record whose checksum does
//! not match is skipped and counted; a truncated tail (a crash during an append) ends the file.

use peercompute_core::limits::MAX_STORED_RECORD_BYTES;

/// First bytes of every document file.
pub const MAGIC: &[u8; 8] = b"PCDOC1\n\0";
/// Bytes before each record's payload.
const RECORD_HEADER: usize = 8;
/// Largest record payload read back (a compacted state may exceed one update's bound).
pub const MAX_RECORD_BYTES: usize = MAX_STORED_RECORD_BYTES;

/// One record, framed.
pub fn encode_record(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A whole file holding `name` and then `updates`.
pub fn encode_file<'a>(name: &str, updates: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend(encode_record(name.as_bytes()));
    for u in updates {
        out.extend(encode_record(u));
    }
    out
}

/// A document file read back.
#[derive(Debug, PartialEq, Eq)]
pub struct DocFile {
    /// The document's name.
    pub name: String,
    /// Its update records, in order.
    pub updates: Vec<Vec<u8>>,
    /// Records skipped: checksum mismatch, or a truncated or oversized tail.
    pub corrupt: usize,
}

/// Why a file is not a document file at all.
#[derive(Debug, PartialEq, Eq)]
pub enum FileError {
    /// It does not start with [`MAGIC`].
    NotADocFile,
    /// The name record is missing, damaged or not a document name.
    BadName,
}

/// Reads a document file; damaged records are skipped and counted, never fatal.
pub fn decode_file(bytes: &[u8]) -> Result<DocFile, FileError> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(FileError::NotADocFile)?;
    let mut records = Records { rest, corrupt: 0 };
    let name = match records.next() {
        Some(Some(n)) => String::from_utf8(n.to_vec()).map_err(|_| FileError::BadName)?,
        _ => return Err(FileError::BadName),
    };
    if peercompute_core::state::path::validate_doc_name(&name).is_err() {
        return Err(FileError::BadName);
    }
    let mut updates = Vec::new();
    for r in records.by_ref() {
        match r {
            Some(payload) => updates.push(payload.to_vec()),
            None => continue,
        }
    }
    Ok(DocFile {
        name,
        updates,
        corrupt: records.corrupt,
    })
}

/// Iterates records: `Some(payload)`, or `None` for a skipped one.
struct Records<'a> {
    rest: &'a [u8],
    corrupt: usize,
}

impl<'a> Iterator for Records<'a> {
    type Item = Option<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let header = self.rest.get(..RECORD_HEADER);
        let len = header.map(|h| u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize);
        let payload = len
            .filter(|&len| len <= MAX_RECORD_BYTES)
            .and_then(|len| self.rest.get(RECORD_HEADER..RECORD_HEADER + len));
        let (Some(h), Some(payload)) = (header, payload) else {
            // Truncated or oversized: nothing after it can be framed again.
            self.corrupt += 1;
            self.rest = &[];
            return None;
        };
        let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        self.rest = &self.rest[RECORD_HEADER + payload.len()..];
        if crc32fast::hash(payload) == crc {
            Some(Some(payload))
        } else {
            self.corrupt += 1;
            Some(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_round_trips() {
        let file = encode_file("w", [b"one".as_slice(), b"", b"three"]);
        assert_eq!(
            decode_file(&file),
            Ok(DocFile {
                name: "w".into(),
                updates: vec![b"one".to_vec(), vec![], b"three".to_vec()],
                corrupt: 0
            })
        );
    }

    #[test]
    fn a_damaged_record_is_skipped_and_a_torn_tail_ends_the_file() {
        let mut file = encode_file("w", [b"one".as_slice(), b"two", b"three"]);
        // Flip a byte of "two"'s payload.
        let at = file.windows(3).position(|w| w == b"two").expect("found");
        file[at] ^= 0xff;
        let decoded = decode_file(&file).expect("decodes");
        assert_eq!(decoded.updates, vec![b"one".to_vec(), b"three".to_vec()]);
        assert_eq!(decoded.corrupt, 1);
        // A crash mid-append: the last record is cut short.
        file.truncate(file.len() - 2);
        let decoded = decode_file(&file).expect("decodes");
        assert_eq!(decoded.updates, vec![b"one".to_vec()]);
        assert_eq!(decoded.corrupt, 2);
    }

    #[test]
    fn not_a_doc_file_or_a_bad_name_is_refused() {
        assert_eq!(decode_file(b"hello"), Err(FileError::NotADocFile));
        assert_eq!(decode_file(MAGIC), Err(FileError::BadName));
        assert_eq!(
            decode_file(&encode_file("", [])),
            Err(FileError::BadName),
            "empty names are not document names"
        );
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&[0; 4]);
        assert_eq!(decode_file(&huge), Err(FileError::BadName));
    }
}
