//! What the store's unit tests share: a store of their own, and one that has been closed
//! and opened again (what survives a restart).

use super::Store;
use crate::testutil::TempDir;

/// A store in a fresh folder of its own (`tag` names the folder).
pub fn fresh(tag: &str) -> (TempDir, Store) {
    let dir = crate::testutil::temp_dir(tag);
    let store = Store::open(&dir).expect("a fresh store opens");
    (dir, store)
}

/// A store that `before` filled, flushed, closed and opened again.
pub fn reopened(tag: &str, before: impl FnOnce(&Store)) -> (TempDir, Store) {
    let (dir, store) = fresh(tag);
    before(&store);
    store.flush_blocking().expect("flush before closing");
    drop(store);
    let store = Store::open(&dir).expect("the store opens again");
    (dir, store)
}
