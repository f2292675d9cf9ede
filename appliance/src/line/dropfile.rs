//! Safe reading of files another machine drops into a folder we watch: the one way the
//! appliance opens anything in an X-ray drop folder, and the one way it removes it.
//!
//! Whoever can write the folder chooses what a name is: a symbolic link to any file on the
//! appliance, a FIFO that blocks a reader for ever, a sparse file of many gigabytes, a hard
//! link to a file elsewhere. So a name is opened with `O_NOFOLLOW` (a link is refused, never
//! followed) and `O_NONBLOCK` (a FIFO cannot block the open), the opened descriptor is
//! checked with `fstat` — a regular file with one name, within the size limit — and read
//! through that descriptor only, never past the limit even if the file grows. Anything kept
//! (archived, quarantined) is written from the bytes so read, so what is kept is exactly
//! what was checked and hashed; a name is unlinked only while it still is the file that was
//! read, so a newer file under a reused name is never removed unseen.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Which file a name stood for when it was looked at: a name seen again with another
/// identity is a new file (the X-ray machine reuses scan ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    dev: u64,
    ino: u64,
    mtime_ns: i128,
    size: u64,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            size: meta.len(),
        }
    }

    /// The file's size in bytes when it was looked at.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// Why a dropped file was refused before any of it was read.
#[derive(Debug, thiserror::Error)]
pub enum DropError {
    /// A symbolic link: never followed, whatever it points at.
    #[error("a symbolic link, not a file: links are never followed")]
    Symlink,
    /// A FIFO, socket, device or folder.
    #[error("{0}, not a regular file")]
    NotRegular(&'static str),
    /// A regular file with more than one name (a hard link to a file elsewhere).
    #[error("a regular file with {0} names (a hard link): only a file of its own is taken")]
    HardLink(u64),
    /// Over the size limit (a sparse file claims any size without using the disk).
    #[error("{size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// The size the file claims.
        size: u64,
        /// The limit for its kind.
        limit: u64,
    },
    /// The name went away, or the open or the read failed.
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
}

impl DropError {
    /// A short key for counters and reason files.
    pub fn kind(&self) -> &'static str {
        match self {
            DropError::Symlink => "symlink",
            DropError::NotRegular(_) | DropError::HardLink(_) => "not_regular",
            DropError::TooLarge { .. } => "too_large",
            DropError::Io(_) => "unreadable",
        }
    }

    /// Whether the name is gone (taken away between listing and opening): nothing to refuse.
    pub fn is_gone(&self) -> bool {
        matches!(self, DropError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

fn file_type_name(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Opens `path` without following a link or blocking on a FIFO and checks, on the opened
/// descriptor, that it is a regular file of its own of at most `limit` bytes.
pub fn open_regular(path: &Path, limit: u64) -> Result<(File, FileId), DropError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            // O_NOFOLLOW on a link fails with ELOOP.
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                DropError::Symlink
            } else {
                DropError::Io(e)
            }
        })?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(DropError::NotRegular(file_type_name(&meta)));
    }
    if meta.nlink() > 1 {
        return Err(DropError::HardLink(meta.nlink()));
    }
    if meta.len() > limit {
        return Err(DropError::TooLarge {
            size: meta.len(),
            limit,
        });
    }
    Ok((file, FileId::of(&meta)))
}

/// Reads a whole dropped file through one checked descriptor ([`open_regular`]); never more
/// than `limit` bytes, even if the file grows while it is read.
pub fn read_regular(path: &Path, limit: u64) -> Result<(Vec<u8>, FileId), DropError> {
    let (file, id) = open_regular(path, limit)?;
    let mut bytes = Vec::with_capacity(usize::try_from(id.size).unwrap_or(0));
    file.take(limit + 1).read_to_end(&mut bytes)?;
    let read = bytes.len() as u64;
    if read > limit {
        return Err(DropError::TooLarge { size: read, limit });
    }
    Ok((bytes, id))
}

/// What a name is now, without following it: its identity, or `None` if it is gone.
pub fn entry_id(path: &Path) -> std::io::Result<Option<FileId>> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(FileId::of(&meta))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes `path` if it still is the file `id` (the same inode on the same device); a name
/// now standing for another file — a scan id reused — is left for the intake. Returns
/// whether it was removed.
pub fn remove_if_same(path: &Path, id: &FileId) -> std::io::Result<bool> {
    match entry_id(path)? {
        Some(now) if now.dev == id.dev && now.ino == id.ino => match std::fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        },
        _ => Ok(false),
    }
}

/// Writes `bytes` under a hidden temporary name in `dir`, synced: the first half of
/// [`write_new`] and [`write_replacing`].
fn write_temp(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tmp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(&tmp)?;
    if let Err(e) = f.write_all(bytes).and_then(|()| f.sync_all()) {
        drop(f);
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes `bytes` as a new file `dir/name` (or `dir/name.1`, `.2`, … when taken: nothing is
/// overwritten), durably: written under a hidden temporary name, synced, then linked into
/// place, so a reader never sees half a file. Returns where it went.
pub fn write_new(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let tmp = write_temp(dir, name, bytes)?;
    let mut n = 0u32;
    let placed = loop {
        let dest = if n == 0 {
            dir.join(name)
        } else {
            dir.join(format!("{name}.{n}"))
        };
        // link(2) fails if dest exists: a kept file is never replaced.
        match std::fs::hard_link(&tmp, &dest) {
            Ok(()) => break Ok(dest),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 10_000 => n += 1,
            Err(e) => break Err(e),
        }
    };
    let _ = std::fs::remove_file(&tmp);
    sync_dir(dir);
    placed
}

/// Writes `bytes` as `dir/name`, durably, replacing a file of that name (a record archived
/// again after a retry): written under a temporary name, synced, renamed into place.
pub fn write_replacing(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let tmp = write_temp(dir, name, bytes)?;
    let dest = dir.join(name);
    if let Err(e) = std::fs::rename(&tmp, &dest) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir);
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> crate::testutil::TempDir {
        crate::testutil::temp_dir(&format!("dropfile-{tag}"))
    }

    #[test]
    fn links_fifos_hard_links_and_sparse_files_are_refused_unread() {
        let d = dir("refuse");
        let secret = d.join("secret.txt");
        std::fs::write(&secret, b"root:x:0:0").expect("write");
        std::os::unix::fs::symlink(&secret, d.join("link.png")).expect("symlink");
        std::os::unix::fs::symlink("/dev/zero", d.join("zero.png")).expect("symlink");
        nix::unistd::mkfifo(&d.join("fifo.json"), nix::sys::stat::Mode::S_IRWXU).expect("fifo");
        std::fs::hard_link(&secret, d.join("hard.png")).expect("hard link");
        let sparse = File::create(d.join("sparse.json")).expect("create");
        sparse.set_len(1_500_000_000).expect("sparse");
        let kind = |name: &str, limit| read_regular(&d.join(name), limit).map(|_| ()).unwrap_err();
        assert!(matches!(kind("link.png", 1 << 20), DropError::Symlink));
        assert!(matches!(kind("zero.png", 1 << 20), DropError::Symlink));
        assert!(matches!(
            kind("fifo.json", 4096),
            DropError::NotRegular("a FIFO")
        ));
        assert!(matches!(kind("hard.png", 1 << 20), DropError::HardLink(2)));
        assert!(matches!(
            kind("sparse.json", 4096),
            DropError::TooLarge {
                size: 1_500_000_000,
                limit: 4096
            }
        ));
        assert!(kind("missing.png", 10).is_gone());
    }

    #[test]
    fn a_name_is_removed_only_while_it_is_the_file_that_was_read() {
        let d = dir("remove");
        let f = d.join("a.png");
        std::fs::write(&f, b"first").expect("write");
        let (bytes, id) = read_regular(&f, 100).expect("read");
        assert_eq!(bytes, b"first");
        // The machine reuses the name: a new file renamed into place.
        std::fs::write(d.join(".a.part"), b"second").expect("write");
        std::fs::rename(d.join(".a.part"), &f).expect("rename");
        assert!(!remove_if_same(&f, &id).expect("checked"));
        assert_eq!(std::fs::read(&f).expect("kept"), b"second");
        let (_, id2) = read_regular(&f, 100).expect("read");
        assert_ne!(id, id2);
        assert!(remove_if_same(&f, &id2).expect("removed"));
        assert!(!f.exists());
        // Written copies never overwrite.
        let one = write_new(&d.join("out"), "x.png", b"1").expect("write");
        let two = write_new(&d.join("out"), "x.png", b"2").expect("write");
        assert_eq!(
            (std::fs::read(&one).ok(), std::fs::read(&two).ok()),
            (Some(b"1".to_vec()), Some(b"2".to_vec()))
        );
        assert_eq!(
            std::fs::read_dir(d.join("out")).expect("out").count(),
            2,
            "no temporary left"
        );
    }
}
