//! Checkpoint files: a versioned, checksummed container written atomically, read back newest
//! first, with a torn or corrupt file passed over for the previous good one.
//!
//! What goes inside (the per-identity state and the input offsets it reflects) is the caller's
//! payload; this module only makes sure that what is read back is exactly what was written.
//!
//! # Format (version 1)
//!
//! A file `checkpoint-<sequence, 20 digits>.nhwc` in the checkpoint directory:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `NHWCKPT\n` |
//! | 8..10 | format version, u16 little-endian (1) |
//! | 10..16 | reserved, zero |
//! | 16..24 | sequence number, u64 little-endian (the one in the file name) |
//! | 24..32 | payload length in bytes, u64 little-endian |
//! | 32..32+n | payload |
//! | 32+n..64+n | SHA-256 of bytes 0..32+n (header and payload) |
//!
//! A file is written to a temporary name, synced, renamed into place and the directory synced,
//! so a crash leaves either the whole file or none under a checkpoint name. Reading checks, in
//! order: the magic, the version, the length against the file size (a torn file is shorter), and
//! the checksum (any flipped bit). A file written in an older format version is not read — its
//! payload layout is not this build's — and neither is one from a newer build; both are passed
//! over like a corrupt file, with the reason, for the previous good checkpoint, and without any,
//! the service starts with empty state from the committed offsets. The newest `keep` files are
//! kept (at least two, so there is always a previous good one).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The magic that opens every checkpoint file.
pub const MAGIC: &[u8; 8] = b"NHWCKPT\n";
/// The format version this build writes and reads.
pub const VERSION: u16 = 1;
const HEADER: usize = 32;
const TRAILER: usize = 32;

/// Why a checkpoint could not be written.
#[derive(Debug, thiserror::Error)]
#[error("checkpoint {path}: {source}")]
pub struct WriteError {
    /// The file or directory.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

/// A checkpoint read back whole and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// Its sequence number.
    pub sequence: u64,
    /// Its file.
    pub path: PathBuf,
    /// What was written.
    pub payload: Vec<u8>,
}

/// A checkpoint file that was passed over, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Why it was not used.
    pub reason: String,
}

/// The checkpoints of one directory.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    dir: PathBuf,
    keep: usize,
}

impl Checkpoints {
    /// Checkpoints in `dir` (created if missing), the newest `keep` kept (at least 2). A
    /// temporary file left by a crash during a write is removed.
    pub fn open(dir: &Path, keep: usize) -> Result<Checkpoints, WriteError> {
        let failed = |source| WriteError {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(failed)?;
        for entry in std::fs::read_dir(dir).map_err(failed)?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".checkpoint-") && name.ends_with(".tmp") {
                std::fs::remove_file(entry.path()).map_err(failed)?;
            }
        }
        Ok(Checkpoints {
            dir: dir.to_owned(),
            keep: keep.max(2),
        })
    }

    fn path(&self, sequence: u64) -> PathBuf {
        self.dir.join(format!("checkpoint-{sequence:020}.nhwc"))
    }

    /// Writes `payload` as checkpoint `sequence`, durably, then removes all but the newest
    /// `keep` checkpoints.
    pub fn write(&self, sequence: u64, payload: &[u8]) -> Result<PathBuf, WriteError> {
        let path = self.path(sequence);
        let tmp = self.dir.join(format!(".checkpoint-{sequence:020}.tmp"));
        let failed = |path: &Path| {
            let path = path.to_owned();
            move |source| WriteError { path, source }
        };
        let mut file = crate::private::create(&tmp).map_err(failed(&tmp))?;
        file.write_all(&seal(sequence, payload)).map_err(failed(&tmp))?;
        file.sync_all().map_err(failed(&tmp))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(failed(&path))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(failed(&self.dir))?;
        for (_, old) in self.list().into_iter().skip(self.keep) {
            std::fs::remove_file(&old).map_err(failed(&old))?;
        }
        Ok(path)
    }

    /// Checkpoint files by sequence, newest first.
    fn list(&self) -> Vec<(u64, PathBuf)> {
        let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name();
                let sequence = name
                    .to_str()?
                    .strip_prefix("checkpoint-")?
                    .strip_suffix(".nhwc")?
                    .parse()
                    .ok()?;
                Some((sequence, entry.path()))
            })
            .collect();
        found.sort_by_key(|(sequence, _)| std::cmp::Reverse(*sequence));
        found
    }

    /// The newest checkpoint that reads back whole, and the newer files passed over.
    pub fn latest(&self) -> (Option<Loaded>, Vec<Skipped>) {
        let (found, skipped) = self.latest_decoded(|payload| Ok(payload.to_vec()));
        (
            found.map(|(sequence, path, payload)| Loaded {
                sequence,
                path,
                payload,
            }),
            skipped,
        )
    }

    /// The newest checkpoint that reads back whole and that `decode` accepts, as its sequence,
    /// file and decoded payload; and the newer files passed over, with the reason.
    pub fn latest_decoded<T>(
        &self,
        mut decode: impl FnMut(&[u8]) -> Result<T, String>,
    ) -> (Option<(u64, PathBuf, T)>, Vec<Skipped>) {
        let mut skipped = Vec::new();
        for (sequence, path) in self.list() {
            match read(&path, sequence).and_then(|payload| decode(&payload)) {
                Ok(value) => return (Some((sequence, path, value)), skipped),
                Err(reason) => skipped.push(Skipped { path, reason }),
            }
        }
        (None, skipped)
    }

    /// The sequence number after every checkpoint file in the directory, good or not.
    pub fn next_sequence(&self) -> u64 {
        self.list().first().map_or(0, |(sequence, _)| sequence + 1)
    }
}

/// `payload` in the container: header, payload, checksum (the bytes of a checkpoint file, or
/// of a changelog record, whose sequence is the input offset it reflects).
pub fn seal(sequence: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len() + TRAILER);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&[0u8; 6]);
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// The sequence and payload of a sealed container, or why it is unusable (not one, another
/// format version, torn, corrupt).
pub fn unseal(bytes: &[u8]) -> Result<(u64, &[u8]), String> {
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err("is not a checkpoint (no magic)".into());
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version < VERSION {
        return Err(format!(
            "is in format version {version}, older than this build's {VERSION}; its state is not read"
        ));
    }
    if version > VERSION {
        return Err(format!(
            "is in format version {version}, written by a newer nhiwatch than this one ({VERSION})"
        ));
    }
    let field = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
    let length = usize::try_from(field(24)).map_err(|_| "declares an impossible length".to_owned())?;
    let expected = HEADER.checked_add(length).and_then(|n| n.checked_add(TRAILER));
    if expected != Some(bytes.len()) {
        return Err(format!(
            "is {} bytes where its header says {}: torn or truncated",
            bytes.len(),
            expected.map_or_else(|| "more than can be".to_owned(), |n| n.to_string())
        ));
    }
    let (body, digest) = bytes.split_at(HEADER + length);
    if Sha256::digest(body).as_slice() != digest {
        return Err("fails its checksum: corrupt".into());
    }
    Ok((field(16), &body[HEADER..]))
}

/// The payload of the checkpoint file at `path`, named with `sequence`, or why it is unusable.
fn read(path: &Path, sequence: u64) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot be read: {e}"))?;
    let (held, payload) = unseal(&bytes)?;
    if held != sequence {
        return Err(format!("holds sequence {held} under the name of {sequence}"));
    }
    Ok(payload.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(dir: &Path) -> (Checkpoints, PathBuf, PathBuf) {
        let c = Checkpoints::open(dir, 3).expect("open");
        let first = c.write(1, b"state one").expect("write");
        let second = c.write(2, b"state two").expect("write");
        (c, first, second)
    }

    #[test]
    fn the_newest_checkpoint_reads_back_exactly_and_old_ones_are_pruned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, _, second) = written(dir.path());
        let (loaded, skipped) = c.latest();
        assert_eq!(
            loaded,
            Some(Loaded {
                sequence: 2,
                path: second,
                payload: b"state two".to_vec()
            })
        );
        assert!(skipped.is_empty());
        for n in 3..=6 {
            c.write(n, &vec![n as u8; 1000]).expect("write");
        }
        let names: Vec<u64> = c.list().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, [6, 5, 4], "the newest three kept");
        // Checkpoints hold identities: their owner's only.
        use std::os::unix::fs::PermissionsExt as _;
        for (_, path) in c.list() {
            let mode = std::fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
        assert_eq!(c.latest().0.expect("one").payload, vec![6u8; 1000]);
        let leftovers = std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .count();
        assert_eq!(leftovers, 0);
        // A write cut short by a crash leaves its temporary file; the next start removes it.
        std::fs::write(dir.path().join(".checkpoint-00000000000000000007.tmp"), b"half").expect("tmp");
        let reopened = Checkpoints::open(dir.path(), 3).expect("reopen");
        assert_eq!(reopened.latest().0.expect("one").sequence, 6);
        assert!(!dir.path().join(".checkpoint-00000000000000000007.tmp").exists());
    }

    #[test]
    fn a_torn_or_corrupt_checkpoint_is_passed_over_for_the_previous_good_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, first, second) = written(dir.path());
        let good = std::fs::read(&second).expect("read");

        // Torn: the last bytes never reached the disk.
        std::fs::write(&second, &good[..good.len() - 5]).expect("tear");
        let (loaded, skipped) = c.latest();
        assert_eq!(loaded.expect("the previous one").path, first);
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].reason.contains("torn or truncated"), "{}", skipped[0].reason);

        // Corrupt: one flipped bit in the payload.
        let mut flipped = good.clone();
        flipped[HEADER + 2] ^= 0x04;
        std::fs::write(&second, &flipped).expect("flip");
        let (loaded, skipped) = c.latest();
        assert_eq!(loaded.expect("the previous one").sequence, 1);
        assert_eq!(skipped[0].reason, "fails its checksum: corrupt");

        // Both bad: nothing to restore, both named.
        std::fs::write(&first, b"garbage").expect("garbage");
        let (loaded, skipped) = c.latest();
        assert_eq!(loaded, None);
        assert_eq!(skipped.len(), 2);
        assert_eq!(skipped[1].reason, "is not a checkpoint (no magic)");
    }

    #[test]
    fn checkpoints_of_another_format_version_are_not_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, first, second) = written(dir.path());
        let mut older = std::fs::read(&second).expect("read");
        older[8..10].copy_from_slice(&0u16.to_le_bytes());
        std::fs::write(&second, &older).expect("older");
        let (loaded, skipped) = c.latest();
        assert_eq!(loaded.expect("the previous one").path, first);
        assert_eq!(
            skipped[0].reason,
            "is in format version 0, older than this build's 1; its state is not read"
        );
        let mut newer = older;
        newer[8..10].copy_from_slice(&2u16.to_le_bytes());
        std::fs::write(&second, &newer).expect("newer");
        assert!(c.latest().1[0].reason.contains("written by a newer nhiwatch"));
    }

    #[test]
    fn a_file_renamed_to_another_sequence_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, first, _) = written(dir.path());
        std::fs::copy(&first, c.path(9)).expect("copy");
        let (loaded, skipped) = c.latest();
        assert_eq!(loaded.expect("sequence 2").sequence, 2);
        assert_eq!(skipped[0].reason, "holds sequence 1 under the name of 9");
    }
}
