//! What the unit tests of every module share.

use std::path::PathBuf;

/// A fresh, empty folder of its own for one test: `tag`, the process and a random number in
/// its name, so that tests running at once never share one.
pub fn temp_dir(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "sl-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("a test folder");
    p
}
