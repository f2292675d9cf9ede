//! The X-ray quarantine: where a bad file from the drop folder goes — corrupt, truncated,
//! oversized, or a lone half of a dual-energy pair — so that it never stops the line and a
//! technician can see why. Each file is moved (never copied and left behind) next to a
//! `<name>.reason.txt` that says why; every move is counted and logged.

use crate::telemetry::Telemetry;
use std::path::{Path, PathBuf};

/// Moves `file` into `dir` with a reason file beside it. A name already taken in the
/// quarantine gets a numeric suffix, so nothing there is overwritten.
pub fn quarantine(dir: &Path, file: &Path, reason: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "unnamed".into());
    let mut dest = dir.join(&name);
    let mut n = 1;
    while dest.exists() {
        dest = dir.join(format!("{name}.{n}"));
        n += 1;
    }
    if std::fs::rename(file, &dest).is_err() {
        // Another filesystem: copy, then remove the original.
        std::fs::copy(file, &dest)?;
        std::fs::remove_file(file)?;
    }
    let reason_file = PathBuf::from(format!("{}.reason.txt", dest.display()));
    std::fs::write(
        &reason_file,
        format!(
            "{reason}\nquarantined at {}\nfrom {}\n",
            crate::time_fmt::format(std::time::SystemTime::now()),
            file.display()
        ),
    )?;
    Ok(dest)
}

/// Quarantines `files` (missing ones are skipped) for one reason, with counter
/// `xray.quarantined` and `xray.quarantined.<kind>` and a log line naming file and reason.
pub fn quarantine_files(
    line_id: &str,
    dir: &Path,
    files: &[&Path],
    kind: &str,
    reason: &str,
    telemetry: &Telemetry,
) {
    for file in files.iter().filter(|f| f.exists()) {
        match quarantine(dir, file, reason) {
            Ok(dest) => {
                telemetry.incr_line(line_id, "xray.quarantined");
                telemetry.incr_line(line_id, &format!("xray.quarantined.{kind}"));
                tracing::warn!(line = line_id, file = %file.display(), to = %dest.display(), %reason, "X-ray file quarantined");
            }
            Err(e) => {
                telemetry.incr_line(line_id, "xray.quarantine_errors");
                tracing::error!(line = line_id, file = %file.display(), error = %e, %reason, "cannot quarantine an X-ray file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_the_file_writes_the_reason_and_never_overwrites() {
        let base = std::env::temp_dir().join(format!("sl-quarantine-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (drop, q) = (base.join("drop"), base.join("q"));
        std::fs::create_dir_all(&drop).expect("dir");
        for round in 0..2 {
            let f = drop.join("a.png");
            std::fs::write(&f, b"junk").expect("write");
            let dest = quarantine(&q, &f, "corrupt: bad header").expect("quarantined");
            assert!(!f.exists());
            assert_eq!(std::fs::read(&dest).expect("moved"), b"junk");
            let reason =
                std::fs::read_to_string(format!("{}.reason.txt", dest.display())).expect("reason");
            assert!(reason.starts_with("corrupt: bad header"), "{reason}");
            if round == 1 {
                assert_eq!(dest, q.join("a.png.1"));
            }
        }
        let _ = std::fs::remove_dir_all(&base);
    }
}
