//! The store's image folder: screened scans archived under their record's id, from the
//! bytes screening read (what the report hashed is what is kept).

use crate::line::dropfile::write_replacing;
use crate::line::image::Evidence;
use std::path::{Path, PathBuf};

/// Archives a screened scan into `images_dir` from the bytes screening read:
/// `<record_id>.<ext>`, or `<record_id>.high.<ext>` + `<record_id>.low.<ext>` for a pair,
/// each written durably (synced, then renamed into place; a record archived again after a
/// retry replaces its files). `extensions` are the files' own, in the evidence's order.
/// Returns the first file's path.
pub fn archive(
    images_dir: &Path,
    record_id: &str,
    evidence: &Evidence,
    extensions: &[String],
) -> std::io::Result<PathBuf> {
    let pair = evidence.low_energy.is_some();
    let mut first = None;
    for ((file, ext), part) in evidence.files().zip(extensions).zip(["high", "low"]) {
        let name = if pair {
            format!("{record_id}.{part}.{ext}")
        } else {
            format!("{record_id}.{ext}")
        };
        let dest = write_replacing(images_dir, &name, &file.bytes)?;
        first.get_or_insert(dest);
    }
    first.ok_or_else(|| std::io::Error::other("a scan without files"))
}
