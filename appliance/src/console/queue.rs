//! The judging queue's leases: which operator has which parcel open. A parcel taken by one
//! operator is offered to no other until its lease runs out (`console.queue.lease_s`); a
//! clear is held for `console.queue.undo_s` before it is recorded, so that it can be undone,
//! and the parcel stays leased meanwhile. Leases live in memory: after a restart every
//! waiting parcel is free again, and a clear still held at a stop is recorded at the stop
//! (`mod.rs`) or, if the stop cuts that short, the parcel simply waits again.
//!
//! Plain functions of the time passed in; one lock, held for a scan of the waiting list.

use crate::store::queue::Waiting;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// The leases of one console.
pub(super) struct Leases {
    held: Mutex<HashMap<String, Lease>>,
    /// How long a taken parcel stays its operator's.
    pub lease: Duration,
    /// How long a clear can be undone.
    pub undo: Duration,
}

struct Lease {
    user: String,
    until: Instant,
    /// A clear made and not yet recorded.
    clear: Option<HeldClear>,
}

/// A clear waiting out its undo time.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct HeldClear {
    pub note: Option<String>,
    /// When the operator decided.
    pub at: SystemTime,
    /// Until when it can be undone.
    pub until: Instant,
    /// Which clear it is (a clear undone and made again is another).
    pub token: u64,
}

/// Someone else has the parcel.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct TakenBy(pub String);

impl Leases {
    pub(super) fn new(lease: Duration, undo: Duration) -> Leases {
        Leases {
            held: Mutex::default(),
            lease,
            undo,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lease>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next parcel of `waiting` (oldest first) for `user`: the one they have open
    /// already, else the oldest nobody has; leased to them. `None` if every one is taken.
    pub(super) fn take(&self, user: &str, waiting: &[Waiting], now: Instant) -> Option<String> {
        let mut held = self.lock();
        held.retain(|_, l| l.clear.is_some() || l.until > now);
        let mine = waiting.iter().find(|w| {
            held.get(&w.record_id)
                .is_some_and(|l| l.user == user && l.clear.is_none())
        });
        let next = mine.or_else(|| waiting.iter().find(|w| !held.contains_key(&w.record_id)))?;
        held.insert(
            next.record_id.clone(),
            Lease {
                user: user.to_owned(),
                until: now + self.lease,
                clear: None,
            },
        );
        Some(next.record_id.clone())
    }

    /// Who has `record` open, if anyone.
    pub(super) fn holder(&self, record: &str, now: Instant) -> Option<String> {
        self.lock()
            .get(record)
            .filter(|l| l.clear.is_some() || l.until > now)
            .map(|l| l.user.clone())
    }

    /// Lets `user` decide `record`: theirs, or nobody's (then it becomes theirs).
    pub(super) fn claim(&self, user: &str, record: &str, now: Instant) -> Result<(), TakenBy> {
        let mut held = self.lock();
        match held.get(record) {
            Some(l) if l.user != user && (l.clear.is_some() || l.until > now) => {
                Err(TakenBy(l.user.clone()))
            }
            // A clear of their own still held: decided already.
            Some(l) if l.clear.is_some() => Err(TakenBy(l.user.clone())),
            _ => {
                held.insert(
                    record.to_owned(),
                    Lease {
                        user: user.to_owned(),
                        until: now + self.lease,
                        clear: None,
                    },
                );
                Ok(())
            }
        }
    }

    /// Holds `user`'s clear of `record` (claimed) for the undo time; its token.
    pub(super) fn hold_clear(
        &self,
        user: &str,
        record: &str,
        note: Option<String>,
        at: SystemTime,
        now: Instant,
    ) -> u64 {
        let token = rand::random();
        self.lock().insert(
            record.to_owned(),
            Lease {
                user: user.to_owned(),
                until: now + self.undo + self.lease,
                clear: Some(HeldClear {
                    note,
                    at,
                    until: now + self.undo,
                    token,
                }),
            },
        );
        token
    }

    /// Undoes `user`'s latest clear that can still be undone: its parcel is theirs again,
    /// open. Which parcel, if there was one.
    pub(super) fn undo(&self, user: &str, now: Instant) -> Option<String> {
        let mut held = self.lock();
        let (record, lease) = held
            .iter_mut()
            .filter(|(_, l)| l.user == user)
            .filter(|(_, l)| l.clear.as_ref().is_some_and(|c| c.until > now))
            .max_by_key(|(_, l)| l.clear.as_ref().map(|c| c.at))?;
        lease.clear = None;
        lease.until = now + self.lease;
        Some(record.clone())
    }

    /// The held clear of `record` if it is still the one of `token`, taken out to be
    /// recorded (the lease stays until [`Leases::release`]).
    pub(super) fn due(&self, record: &str, token: u64) -> Option<HeldClear> {
        let mut held = self.lock();
        let lease = held.get_mut(record)?;
        if lease.clear.as_ref().is_some_and(|c| c.token == token) {
            lease.clear.take()
        } else {
            None
        }
    }

    /// `record` is decided (or was not): nobody has it any more.
    pub(super) fn release(&self, record: &str) {
        self.lock().remove(record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::queue::QueueKind;

    fn waiting(ids: &[&str]) -> Vec<Waiting> {
        ids.iter()
            .map(|id| Waiting {
                record_id: (*id).to_owned(),
                kind: QueueKind::Flagged,
                arrived_ms: 0,
            })
            .collect()
    }

    #[test]
    fn a_taken_parcel_is_offered_to_no_one_else_until_its_lease_runs_out() {
        let leases = Leases::new(Duration::from_secs(180), Duration::from_secs(5));
        let t0 = Instant::now();
        let q = waiting(&["a", "b"]);
        assert_eq!(leases.take("op1", &q, t0).as_deref(), Some("a"));
        // op1 again: the one they have open.
        assert_eq!(leases.take("op1", &q, t0).as_deref(), Some("a"));
        assert_eq!(leases.take("op2", &q, t0).as_deref(), Some("b"));
        assert_eq!(leases.take("op3", &q, t0), None, "both taken");
        assert_eq!(leases.holder("a", t0).as_deref(), Some("op1"));
        assert_eq!(leases.claim("op2", "a", t0), Err(TakenBy("op1".into())));
        // op1 walked away: after the lease, someone else gets it.
        let later = t0 + Duration::from_secs(181);
        assert_eq!(leases.take("op3", &q, later).as_deref(), Some("a"));
        assert_eq!(leases.claim("op1", "a", later), Err(TakenBy("op3".into())));
    }

    #[test]
    fn a_clear_is_held_for_the_undo_time_and_can_be_taken_back() {
        let leases = Leases::new(Duration::from_secs(180), Duration::from_secs(5));
        let t0 = Instant::now();
        let q = waiting(&["a", "b"]);
        leases.take("op1", &q, t0);
        leases.claim("op1", "a", t0).expect("theirs");
        let token = leases.hold_clear("op1", "a", Some("ok".into()), SystemTime::now(), t0);
        // Meanwhile the parcel is nobody else's, and op1 goes on with the next.
        assert_eq!(leases.take("op2", &q, t0).as_deref(), Some("b"));
        assert_eq!(
            leases.take("op1", &waiting(&["a", "c"]), t0).as_deref(),
            Some("c")
        );
        assert_eq!(
            leases.claim("op1", "a", t0),
            Err(TakenBy("op1".into())),
            "decided"
        );
        // Undone in time: open again, and the held clear is not recorded.
        assert_eq!(
            leases.undo("op1", t0 + Duration::from_secs(4)).as_deref(),
            Some("a")
        );
        assert_eq!(leases.due("a", token), None);
        leases.claim("op1", "a", t0).expect("theirs again");
        // Cleared again, and this time the undo comes too late: it is recorded.
        let token = leases.hold_clear("op1", "a", None, SystemTime::now(), t0);
        assert_eq!(leases.undo("op1", t0 + Duration::from_secs(6)), None);
        assert!(leases.due("a", token).is_some());
        leases.release("a");
        assert_eq!(leases.holder("a", t0), None);
    }
}
