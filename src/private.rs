//! Files that hold raw records, events or findings — patient data and the identities that touched
//! it: the dead letter, the findings journal, the outbox, checkpoints, the event and finding
//! streams. They are created readable and writable by their owner only (`0600`); the archive,
//! whose Parquet files the object store creates itself, gets a root directory only its owner
//! may enter (`0700`). The umask can only narrow these.
//!
//! A file or directory that already exists keeps its mode — an operator may have opened it to a
//! log shipper's group on purpose — and a wider one is reported when it is opened, which for
//! all but the outbox's later segments is at start.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// The mode of the files created here.
pub const FILE_MODE: u32 = 0o600;

/// The mode of the directories created here.
pub const DIR_MODE: u32 = 0o700;

/// Opens `path` for appending, creating it `0600`.
pub fn append(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)?;
    warn_if_shared(path, &file);
    Ok(file)
}

/// Opens `path` for writing from the start, creating it `0600` or truncating it.
pub fn create(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    warn_if_shared(path, &file);
    Ok(file)
}

/// Creates the directory `path` and its missing parents `0700`.
pub fn dir(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(path)?;
    if let Ok(meta) = std::fs::metadata(path) {
        warn_if_wider(path, meta.permissions().mode());
    }
    Ok(())
}

fn warn_if_shared(path: &Path, file: &File) {
    if let Ok(meta) = file.metadata() {
        warn_if_wider(path, meta.permissions().mode());
    }
}

fn warn_if_wider(path: &Path, mode: u32) {
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", mode & 0o777),
            "Others than the owner may read this file or directory, which holds records, events or findings; nhiwatch creates them 0600 (directories 0700) but leaves an existing mode as it is."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("exists").permissions().mode() & 0o777
    }

    #[test]
    fn creates_owner_only_and_keeps_an_existing_mode() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let appended = tmp.path().join("a.ndjson");
        append(&appended).expect("append");
        assert_eq!(mode(&appended), 0o600);
        let created = tmp.path().join("b.ndjson");
        create(&created).expect("create");
        assert_eq!(mode(&created), 0o600);
        let root = tmp.path().join("archive/root");
        dir(&root).expect("dir");
        assert_eq!((mode(&root), mode(&tmp.path().join("archive"))), (0o700, 0o700));

        let shared = tmp.path().join("shared.ndjson");
        std::fs::write(&shared, "x\n").expect("write");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        append(&shared).expect("append");
        assert_eq!(mode(&shared), 0o640, "an existing file keeps its mode (with a warning)");
    }
}
