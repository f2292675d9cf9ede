//! Console users' own settings (the `prefs` tree, by user name): whether their alarm is
//! muted and which lines it watches. A user without an entry has the defaults — the alarm
//! sounds, for every line — so no one is ever muted without having chosen it.

use super::{Store, StoreError};
use serde::{Deserialize, Serialize};

const PREFS: &str = "prefs";

/// One user's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPrefs {
    /// The alarm flashes but makes no sound.
    #[serde(default)]
    pub muted: bool,
    /// The lines whose flagged and manual parcels raise the alarm; `None`: every line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<Vec<String>>,
}

impl UserPrefs {
    /// Whether a parcel of `line` raises this user's alarm.
    pub fn watches(&self, line: &str) -> bool {
        self.lines
            .as_ref()
            .is_none_or(|ls| ls.iter().any(|l| l == line))
    }
}

impl Store {
    /// `user`'s settings (the defaults if they never changed them).
    pub fn prefs(&self, user: &str) -> Result<UserPrefs, StoreError> {
        Ok(self.get_json(PREFS, user)?.unwrap_or_default())
    }

    /// Keeps `user`'s settings.
    pub fn set_prefs(&self, user: &str, prefs: &UserPrefs) -> Result<(), StoreError> {
        self.db
            .open_tree(PREFS)?
            .insert(user.as_bytes(), serde_json::to_vec(prefs)?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settings_are_kept_per_user_and_default_to_an_alarm_for_every_line() {
        let (_dir, store) = crate::store::testing::reopened("prefs", |store| {
            assert_eq!(store.prefs("op1").expect("read"), UserPrefs::default());
            let mine = UserPrefs {
                muted: true,
                lines: Some(vec!["L2".into()]),
            };
            store.set_prefs("op1", &mine).expect("write");
        });
        let op1 = store.prefs("op1").expect("read");
        assert!(op1.muted && op1.watches("L2") && !op1.watches("L1"));
        let op2 = store.prefs("op2").expect("read");
        assert!(!op2.muted && op2.watches("L1") && op2.watches("anything"));
    }
}
