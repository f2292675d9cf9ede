//! What the unit tests of every module share.

use std::ops::Deref;
use std::path::{Path, PathBuf};

/// A fresh, empty folder of one test's own, removed with everything in it when the value
/// goes out of scope (declare it before what keeps files open in it, such as a store).
pub struct TempDir(PathBuf);

impl Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh, empty folder for one test: `tag`, the process and a random number in its name,
/// so that tests running at once never share one.
pub fn temp_dir(tag: &str) -> TempDir {
    let p = std::env::temp_dir().join(format!(
        "sl-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("a test folder");
    TempDir(p)
}
