//! The audit log: every action that changes something — a console login or logout, an
//! operator's review, a regulator's command — with who, when, and on what. Append-only;
//! read newest first.

use super::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::time::SystemTime;

/// One audited action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// RFC 3339.
    pub at: String,
    /// Who: a console user (`user:NAME`), `regulator`, `cli`, or an address for a failed login.
    pub actor: String,
    /// What: e.g. `login`, `login_failed`, `logout`, `review.confirmed`, `cmd.watchlist`.
    pub action: String,
    /// On what: a record id, a user name, a command id.
    pub target: String,
    /// Plain words, never personal data.
    pub detail: String,
}

impl AuditEntry {
    /// An entry for what `actor` did just now.
    pub fn now(actor: &str, action: &str, target: &str, detail: &str) -> AuditEntry {
        AuditEntry {
            at: crate::time_fmt::format(SystemTime::now()),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail: detail.to_owned(),
        }
    }
}

impl Store {
    /// Appends an entry, durably.
    pub fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let now = SystemTime::now();
        // Time-ordered keys; the id generator breaks ties within one clock tick.
        let nanos = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let key = format!("{nanos:032}-{:016x}", self.db.generate_id()?);
        self.audit
            .insert(key.as_bytes(), serde_json::to_vec(entry)?)?;
        Ok(())
    }

    /// Deletes entries older than `before` and, beyond the newest `max_entries`, the oldest
    /// ones: the audit log lives as long as the records (retention) and never grows past
    /// its cap however much arrives. Returns how many went.
    pub fn prune_audit(&self, before: SystemTime, max_entries: usize) -> Result<usize, StoreError> {
        let cutoff = format!(
            "{:032}",
            before
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let mut gone = 0;
        for key in self.audit.range(..cutoff.as_bytes()).keys() {
            self.audit.remove(key?)?;
            gone += 1;
        }
        let len = self.audit.len();
        if len > max_entries {
            for key in self.audit.iter().keys().take(len - max_entries) {
                self.audit.remove(key?)?;
                gone += 1;
            }
        }
        Ok(gone)
    }

    /// Up to `limit` entries, newest first, for which `keep` holds.
    pub fn audit_log(
        &self,
        limit: usize,
        keep: impl Fn(&AuditEntry) -> bool,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        super::query::newest_first(&self.audit, limit, usize::MAX, keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_come_back_newest_first_and_survive_reopen() {
        let (_dir, store) = crate::store::testing::reopened("audit", |store| {
            for i in 0..5 {
                let entry = AuditEntry::now("user:li", "review.confirmed", &format!("r{i}"), "");
                store.audit(&entry).expect("audit");
            }
            let entry = AuditEntry::now("regulator", "cmd.watchlist", "c1", "version 7");
            store.audit(&entry).expect("audit");
        });
        let all = store.audit_log(100, |_| true).expect("log");
        assert_eq!(all.len(), 6);
        assert_eq!(all[0].action, "cmd.watchlist");
        assert_eq!(all[1].target, "r4");
        assert_eq!(all[5].target, "r0");
        let reviews = store.audit_log(2, |e| e.actor == "user:li").expect("log");
        // Retention by age, then the cap: the newest stay.
        assert_eq!(
            store.prune_audit(SystemTime::UNIX_EPOCH, 4).expect("prune"),
            2
        );
        let left = store.audit_log(100, |_| true).expect("log");
        assert_eq!(left.len(), 4);
        assert_eq!(left[0].action, "cmd.watchlist");
        assert_eq!(
            store
                .prune_audit(SystemTime::now() + std::time::Duration::from_secs(1), 100)
                .expect("prune"),
            4
        );
        assert_eq!(
            reviews
                .iter()
                .map(|e| e.target.as_str())
                .collect::<Vec<_>>(),
            ["r4", "r3"]
        );
    }
}
