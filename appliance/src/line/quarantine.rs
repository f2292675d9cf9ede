//! The X-ray quarantine: where a bad file from the drop folder goes — corrupt, truncated,
//! oversized, a lone half of a dual-energy pair, a sidecar whose image never came, or a name
//! that is no file at all (a link, a FIFO) — so that it never stops the line and a
//! technician can see why. Every refusal gets a `<name>.reason.txt`, a counter and a log line.
//!
//! What is kept is a copy of the bytes read through one checked descriptor
//! ([`super::dropfile`]): never a renamed or copied link, never the target of one. A name
//! that is not a regular file of its own within the size limit — a link, a FIFO, a sparse
//! giant — keeps no content, only the reason; then the name is removed from the drop
//! folder, if it still is what was refused, so it is not refused again and again.

use super::dropfile::{read_regular, remove_if_same, write_new, FileId};
use crate::telemetry::{LineCounter, Telemetry};
use std::path::{Path, PathBuf};

/// A file in the drop folder to quarantine.
#[derive(Debug, Clone, Copy)]
pub struct Refused<'a> {
    /// Its name in the drop folder.
    pub path: &'a Path,
    /// What the name was when it was refused (from `lstat`): the name is removed only while
    /// it still is that. `None` when not known: then the name is removed only if its content
    /// could be read and kept.
    pub seen: Option<FileId>,
    /// Its bytes when they were read already (read through the checked descriptor).
    pub bytes: Option<&'a [u8]>,
}

impl<'a> Refused<'a> {
    /// A file known only by its name.
    pub fn path(path: &'a Path) -> Refused<'a> {
        Refused {
            path,
            seen: None,
            bytes: None,
        }
    }
}

fn name_of(file: &Path) -> String {
    file.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "unnamed".into())
}

/// Quarantines one refused file into `dir`: its content (read now through a checked
/// descriptor of at most `limit` bytes, unless given) and a reason file. Returns where the
/// content went, or `None` when none could be kept (the reason file says why).
pub fn quarantine(
    dir: &Path,
    file: Refused<'_>,
    limit: u64,
    reason: &str,
) -> std::io::Result<Option<PathBuf>> {
    let name = name_of(file.path);
    let read;
    let (content, read_id, not_kept) = match file.bytes {
        Some(b) => (Some(b), None, None),
        None => match read_regular(file.path, limit) {
            Ok((bytes, id)) => {
                read = bytes;
                (Some(read.as_slice()), Some(id), None)
            }
            Err(e) => (None, None, Some(e.to_string())),
        },
    };
    let dest = content.map(|b| write_new(dir, &name, b)).transpose()?;
    let reason_name = match &dest {
        Some(d) => format!("{}.reason.txt", name_of(d)),
        None => format!("{name}.reason.txt"),
    };
    let mut text = format!(
        "{reason}\nquarantined at {}\nfrom {}\n",
        crate::time_fmt::format(std::time::SystemTime::now()),
        file.path.display()
    );
    if let Some(why) = not_kept {
        text.push_str(&format!("content not kept: {why}\n"));
    }
    write_new(dir, &reason_name, text.as_bytes())?;
    // Remove the name only while it is what was refused (or read): a newer file under a
    // reused name stays for the intake.
    if let Some(id) = file.seen.or(read_id) {
        remove_if_same(file.path, &id)?;
    }
    Ok(dest)
}

/// Quarantines `files` for one reason, counted by `kind`
/// ([`LineCounter::XrayQuarantined`]), with a log line naming file and reason. Names
/// already gone are skipped.
pub fn quarantine_files(
    line_id: &str,
    dir: &Path,
    files: &[Refused<'_>],
    limit: u64,
    kind: &'static str,
    reason: &str,
    telemetry: &Telemetry,
) {
    for file in files {
        if file.bytes.is_none() && !matches!(super::dropfile::entry_id(file.path), Ok(Some(_))) {
            continue;
        }
        match quarantine(dir, *file, limit, reason) {
            Ok(dest) => {
                telemetry.incr_line(line_id, LineCounter::XrayQuarantined(kind));
                let to =
                    dest.map_or_else(|| "(reason only)".to_owned(), |d| d.display().to_string());
                tracing::warn!(line = line_id, file = %file.path.display(), %to, %kind, %reason, "X-ray file quarantined");
            }
            Err(e) => {
                telemetry.incr_line(line_id, LineCounter::XrayQuarantineErrors);
                tracing::error!(line = line_id, file = %file.path.display(), error = %e, %reason, "cannot quarantine an X-ray file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_the_file_writes_the_reason_and_never_overwrites() {
        let base = crate::testutil::temp_dir("quarantine");
        let (drop, q) = (base.join("drop"), base.join("q"));
        std::fs::create_dir_all(&drop).expect("dir");
        for round in 0..2 {
            let f = drop.join("a.png");
            std::fs::write(&f, b"junk").expect("write");
            let dest = quarantine(&q, Refused::path(&f), 100, "corrupt: bad header")
                .expect("quarantined")
                .expect("content kept");
            assert!(!f.exists());
            assert_eq!(std::fs::read(&dest).expect("copied"), b"junk");
            let reason =
                std::fs::read_to_string(format!("{}.reason.txt", dest.display())).expect("reason");
            assert!(reason.starts_with("corrupt: bad header"), "{reason}");
            if round == 1 {
                assert_eq!(dest, q.join("a.png.1"));
            }
        }
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn a_link_is_removed_and_its_target_never_copied() {
        let base = crate::testutil::temp_dir("quarantine-link");
        let (drop, q) = (base.join("drop"), base.join("q"));
        std::fs::create_dir_all(&drop).expect("dir");
        let secret = base.join("secret.txt");
        std::fs::write(&secret, b"secret").expect("write");
        let link = drop.join("s.png");
        std::os::unix::fs::symlink(&secret, &link).expect("link");
        let seen = super::super::dropfile::entry_id(&link).expect("lstat");
        let kept = quarantine(
            &q,
            Refused {
                path: &link,
                seen,
                bytes: None,
            },
            100,
            "a link",
        )
        .expect("quarantined");
        assert_eq!(kept, None);
        assert!(
            std::fs::symlink_metadata(&link).is_err(),
            "the link is gone"
        );
        assert_eq!(
            std::fs::read(&secret).expect("target"),
            b"secret",
            "its target untouched"
        );
        let reason = std::fs::read_to_string(q.join("s.png.reason.txt")).expect("reason");
        assert!(
            reason.contains("content not kept: a symbolic link"),
            "{reason}"
        );
        assert_eq!(
            std::fs::read_dir(&q).expect("q").count(),
            1,
            "only the reason"
        );
        let _ = std::fs::remove_dir_all(&base);
    }
}
