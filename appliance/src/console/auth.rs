//! Console users, sessions and login throttling.
//!
//! Users live in `<data_dir>/users.json` (written by `screenline user add`, read again by the
//! running console when it changes), each with an argon2id PHC hash and a role. A session is
//! a random 256-bit token in an `HttpOnly; SameSite=Strict` cookie, held in memory only (a
//! restart logs everyone out), with its own CSRF token for every form that changes
//! something; it ends after 30 idle minutes or 12 hours, and as soon as its user is removed or
//! given another role. Logins are throttled by [`LoginLimiter`] before any password is checked.

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};
use thiserror::Error;

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Watches the line, reviews flagged parcels.
    Operator,
    /// Everything an operator does, and devices, model, configuration, logs, audit.
    Technician,
}

impl Role {
    pub fn key(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Technician => "technician",
        }
    }
}

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// A user-file problem.
#[derive(Debug, Error)]
pub enum UserError {
    #[error("user name {0:?}: use 1 to 32 of a-z, 0-9, '.', '_' or '-'")]
    BadName(String),
    #[error("the password must have at least {MIN_PASSWORD_CHARS} characters")]
    ShortPassword,
    #[error("user {0} exists already")]
    Exists(String),
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct UserEntry {
    role: Role,
    /// argon2id, PHC string format.
    hash: String,
    created: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct UserFile {
    users: BTreeMap<String, UserEntry>,
}

/// The users file.
pub struct Users {
    path: PathBuf,
    cache: Mutex<(Option<SystemTime>, UserFile)>,
}

fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

impl Users {
    /// The users file of a data folder.
    pub fn in_data_dir(data_dir: &Path) -> Users {
        Users {
            path: data_dir.join("users.json"),
            cache: Mutex::new((None, UserFile::default())),
        }
    }

    fn file_err(&self, why: impl ToString) -> UserError {
        UserError::File {
            path: self.path.clone(),
            why: why.to_string(),
        }
    }

    fn read(&self) -> Result<UserFile, UserError> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| self.file_err(e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UserFile::default()),
            Err(e) => Err(self.file_err(e)),
        }
    }

    /// Adds a user; the file is replaced atomically and readable by its owner only.
    pub fn add(&self, name: &str, role: Role, password: &str) -> Result<(), UserError> {
        self.write(name, role, password, false)
    }

    /// Adds a user, or gives an existing one this role and password.
    pub fn set(&self, name: &str, role: Role, password: &str) -> Result<(), UserError> {
        self.write(name, role, password, true)
    }

    fn write(
        &self,
        name: &str,
        role: Role,
        password: &str,
        replace: bool,
    ) -> Result<(), UserError> {
        if !valid_name(name) {
            return Err(UserError::BadName(name.to_owned()));
        }
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(UserError::ShortPassword);
        }
        let mut file = self.read()?;
        if !replace && file.users.contains_key(name) {
            return Err(UserError::Exists(name.to_owned()));
        }
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| UserError::Hash(e.to_string()))?
            .to_string();
        file.users.insert(
            name.to_owned(),
            UserEntry {
                role,
                hash,
                created: crate::time_fmt::format(SystemTime::now()),
            },
        );
        self.save(&file)
    }

    fn save(&self, file: &UserFile) -> Result<(), UserError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.file_err(e))?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(file).map_err(|e| self.file_err(e))?;
        write_private(&tmp, &text).map_err(|e| self.file_err(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.file_err(e))
    }

    /// The role of `name` if `password` is theirs. Always spends one argon2 verification,
    /// known user or not, so that timing does not tell which names exist.
    pub fn verify(&self, name: &str, password: &str) -> Result<Option<Role>, UserError> {
        let entry = self.lookup(name)?;
        // For unknown names, a hash of a random password made once.
        static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let dummy = DUMMY.get_or_init(|| {
            let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
            Argon2::default()
                .hash_password(token().as_bytes(), &salt)
                .map(|h| h.to_string())
                .unwrap_or_default()
        });
        let hash = entry.as_ref().map_or(dummy.as_str(), |e| e.hash.as_str());
        let ok = PasswordHash::new(hash)
            .map(|h| verify_in_place(&h, password.as_bytes()))
            .unwrap_or(false);
        Ok(entry.filter(|_| ok).map(|e| e.role))
    }

    /// The role `name` has now (`None` once they are removed).
    pub fn role(&self, name: &str) -> Result<Option<Role>, UserError> {
        Ok(self.lookup(name)?.map(|e| e.role))
    }

    /// Removes a user; the file is replaced atomically. `false` if there was none.
    pub fn remove(&self, name: &str) -> Result<bool, UserError> {
        let mut file = self.read()?;
        if file.users.remove(name).is_none() {
            return Ok(false);
        }
        self.save(&file)?;
        Ok(true)
    }

    /// Whether the file names any user.
    pub fn any(&self) -> Result<bool, UserError> {
        self.refresh()?;
        Ok(!self.cache_lock().1.users.is_empty())
    }

    fn cache_lock(&self) -> std::sync::MutexGuard<'_, (Option<SystemTime>, UserFile)> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refresh(&self) -> Result<(), UserError> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let stale = self.cache_lock().0 != modified || modified.is_none();
        if stale {
            let file = self.read()?;
            *self.cache_lock() = (modified, file);
        }
        Ok(())
    }

    fn lookup(&self, name: &str) -> Result<Option<UserEntry>, UserError> {
        self.refresh()?;
        Ok(self.cache_lock().1.users.get(name).cloned())
    }
}

thread_local! {
    /// argon2's working memory (19 MiB at the default cost), kept by the thread that checks
    /// passwords: allocating it for every check leaves the allocator holding several copies
    /// per thread (measured: about 58 MiB per arena, 300 MB in all, under a login flood).
    static ARGON2_MEMORY: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Whether `password` is the one `hash` (a PHC argon2 string) was made of, computed in this
/// thread's kept working memory; compared in constant time.
fn verify_in_place(hash: &PasswordHash<'_>, password: &[u8]) -> bool {
    let run = || -> Option<bool> {
        let params = argon2::Params::try_from(hash).ok()?;
        let algorithm = argon2::Algorithm::try_from(hash.algorithm).ok()?;
        let version = match hash.version {
            Some(v) => argon2::Version::try_from(v).ok()?,
            None => argon2::Version::default(),
        };
        let expected = hash.hash.as_ref()?.as_bytes();
        let mut salt = [0u8; 64];
        let salt = hash.salt?.decode_b64(&mut salt).ok()?;
        let mut out = vec![0u8; expected.len()];
        let blocks = params.block_count();
        let argon = Argon2::new(algorithm, version, params);
        ARGON2_MEMORY.with(|m| {
            let mut m = m.borrow_mut();
            if m.len() < blocks {
                m.resize(blocks, argon2::Block::default());
            }
            argon
                .hash_password_into_with_memory(password, salt, &mut out, &mut m[..blocks])
                .ok()
        })?;
        Some(
            out.len() == expected.len()
                && out
                    .iter()
                    .zip(expected)
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0,
        )
    };
    run().unwrap_or(false)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub role: Role,
    /// Must come back with every form that changes something.
    pub csrf: String,
    started: Instant,
    last_seen: Instant,
}

/// Sessions end after this long without a request…
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// …and after this long in any case.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);

/// The sessions of the running console.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

fn token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl Sessions {
    /// Starts a session; returns its token.
    pub fn start(&self, user: &str, role: Role) -> String {
        let now = Instant::now();
        let t = token();
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| alive(s, now));
        map.insert(
            t.clone(),
            Session {
                user: user.to_owned(),
                role,
                csrf: token(),
                started: now,
                last_seen: now,
            },
        );
        t
    }

    /// The live session for a token, touched.
    pub fn get(&self, token: &str) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(token) {
            Some(s) if alive(s, now) => {
                s.last_seen = now;
                Some(s.clone())
            }
            Some(_) => {
                map.remove(token);
                None
            }
            None => None,
        }
    }

    /// The live session for a token, not touched: a live stream watching the line is no
    /// sign that someone is at the screen.
    pub fn peek(&self, token: &str) -> Option<Session> {
        let now = Instant::now();
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(token).filter(|s| alive(s, now)).cloned()
    }

    /// Ends a session.
    pub fn end(&self, token: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token);
    }
}

fn alive(s: &Session, now: Instant) -> bool {
    now.duration_since(s.last_seen) < IDLE && now.duration_since(s.started) < ABSOLUTE
}

/// The longest user name a login may carry: longer ones are refused before anything about
/// them is kept, logged or audited.
pub const MAX_NAME_BYTES: usize = 64;

/// Failed logins an address may make before it is slowed down…
pub const FREE_FAILURES: u32 = 3;
/// …after which each further failure doubles its wait, starting from this…
pub const FIRST_DELAY: Duration = Duration::from_secs(1);
/// …and never longer than this: a delay, never a lockout.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// An address's failures are forgotten after this long without one.
pub const FORGET: Duration = Duration::from_secs(15 * 60);
/// Guesses one user name may take in a burst from addresses it has not logged in from…
pub const USER_BURST: u32 = 5;
/// …then one more every this long (five a minute), whatever the number of addresses.
pub const USER_REFILL: Duration = Duration::from_secs(12);
/// Addresses a user logged in from are remembered this long (and at most
/// [`KNOWN_PER_USER`] of them)…
pub const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// …so that guesses spread over other addresses never keep the user out.
pub const KNOWN_PER_USER: usize = 8;
/// Entries kept at most per kind (addresses, names); beyond, the stalest are dropped.
const MAX_ENTRIES: usize = 4096;

struct AddrState {
    /// Failures, counting attempts still being checked.
    failures: u32,
    /// No attempt from the address before this.
    next: Instant,
    last: Instant,
}

struct UserState {
    /// Guesses left for addresses the user has not logged in from.
    tokens: f64,
    refilled: Instant,
    known: VecDeque<(IpAddr, Instant)>,
}

/// The wait after `failures` failures from one address.
fn address_delay(failures: u32) -> Duration {
    match failures.checked_sub(FREE_FAILURES) {
        None => Duration::ZERO,
        Some(n) => FIRST_DELAY
            .checked_mul(1u32.checked_shl(n).unwrap_or(u32::MAX))
            .unwrap_or(MAX_DELAY)
            .min(MAX_DELAY),
    }
}

/// A login attempt the throttle let through: counted as a failure until it is known to be
/// one ([`LoginLimiter::failed`]) or not ([`LoginLimiter::succeeded`],
/// [`LoginLimiter::abandoned`]).
#[derive(Debug)]
pub struct Attempt {
    ip: IpAddr,
    user: String,
    /// Whether it took one of the user name's guesses.
    took_guess: bool,
}

/// Login throttling, decided atomically (one lock, before any password is checked) by client
/// address — a few free failures, then an exponential, capped delay — and by user name
/// across all addresses — a few guesses a minute, as a delay — except from addresses the
/// user has logged in from, so that no one can keep a user out.
#[derive(Default)]
pub struct LoginLimiter(Mutex<(HashMap<IpAddr, AddrState>, HashMap<String, UserState>)>);

/// Drops forgotten entries, then the stalest, to keep a map within [`MAX_ENTRIES`].
fn make_room<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    stale: impl Fn(&V) -> bool,
    age: impl Fn(&V) -> Instant,
) {
    if map.len() < MAX_ENTRIES {
        return;
    }
    map.retain(|_, v| !stale(v));
    while map.len() >= MAX_ENTRIES {
        let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| age(v))
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        map.remove(&oldest);
    }
}

impl LoginLimiter {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, (HashMap<IpAddr, AddrState>, HashMap<String, UserState>)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets an attempt of `ip` at `user` through, counted, or says how long to wait first.
    pub fn begin(&self, ip: IpAddr, user: &str) -> Result<Attempt, Duration> {
        let now = Instant::now();
        let mut guard = self.lock();
        let (addrs, users) = &mut *guard;
        if let Some(a) = addrs.get(&ip) {
            if now < a.next {
                return Err(a.next - now);
            }
        }
        make_room(
            users,
            |u| u.known.is_empty() && now.duration_since(u.refilled) >= USER_REFILL * USER_BURST,
            |u| u.refilled,
        );
        let u = users.entry(user.to_owned()).or_insert(UserState {
            tokens: f64::from(USER_BURST),
            refilled: now,
            known: VecDeque::new(),
        });
        u.tokens = (u.tokens
            + now.duration_since(u.refilled).as_secs_f64() / USER_REFILL.as_secs_f64())
        .min(f64::from(USER_BURST));
        u.refilled = now;
        u.known
            .retain(|(_, at)| now.duration_since(*at) < KNOWN_FOR);
        let known = u.known.iter().any(|(k, _)| *k == ip);
        if !known && u.tokens < 1.0 {
            return Err(USER_REFILL.mul_f64(1.0 - u.tokens));
        }
        if !known {
            u.tokens -= 1.0;
        }
        make_room(addrs, |a| now.duration_since(a.last) >= FORGET, |a| a.last);
        let a = addrs.entry(ip).or_insert(AddrState {
            failures: 0,
            next: now,
            last: now,
        });
        if now.duration_since(a.last) >= FORGET {
            a.failures = 0;
        }
        a.failures += 1;
        a.next = now + address_delay(a.failures);
        a.last = now;
        Ok(Attempt {
            ip,
            user: user.to_owned(),
            took_guess: !known,
        })
    }

    /// The password was wrong: the attempt stays counted.
    pub fn failed(&self, attempt: Attempt) {
        drop(attempt);
    }

    /// The password was right: the attempt is uncounted, and the user may come back from
    /// this address whatever others guess.
    pub fn succeeded(&self, attempt: Attempt) {
        let now = Instant::now();
        self.undo(&attempt);
        let mut guard = self.lock();
        if let Some(u) = guard.1.get_mut(&attempt.user) {
            u.known.retain(|(k, _)| *k != attempt.ip);
            u.known.push_back((attempt.ip, now));
            while u.known.len() > KNOWN_PER_USER {
                u.known.pop_front();
            }
        }
    }

    /// The password could not be checked (too busy): the attempt is uncounted.
    pub fn abandoned(&self, attempt: Attempt) {
        self.undo(&attempt);
    }

    fn undo(&self, attempt: &Attempt) {
        let mut guard = self.lock();
        let (addrs, users) = &mut *guard;
        if let Some(a) = addrs.get_mut(&attempt.ip) {
            a.failures = a.failures.saturating_sub(1);
            a.next = a.next.min(a.last + address_delay(a.failures));
        }
        if attempt.took_guess {
            if let Some(u) = users.get_mut(&attempt.user) {
                u.tokens = (u.tokens + 1.0).min(f64::from(USER_BURST));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_added_hashed_and_verified() {
        let dir = crate::testutil::temp_dir("users");
        let users = Users::in_data_dir(&dir);
        assert!(!users.any().expect("no file yet is no users"));
        users
            .add("li.wei", Role::Operator, "correct horse battery")
            .expect("add");
        assert!(matches!(
            users.add("li.wei", Role::Technician, "another password"),
            Err(UserError::Exists(_))
        ));
        assert!(matches!(
            users.add("Li Wei", Role::Operator, "long enough pw"),
            Err(UserError::BadName(_))
        ));
        assert!(matches!(
            users.add("x", Role::Operator, "short"),
            Err(UserError::ShortPassword)
        ));
        let text = std::fs::read_to_string(dir.join("users.json")).expect("file");
        assert!(
            text.contains("$argon2id$") && !text.contains("battery"),
            "{text}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("users.json"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "owner only: {mode:o}");
        }
        assert_eq!(
            users
                .verify("li.wei", "correct horse battery")
                .expect("verify"),
            Some(Role::Operator)
        );
        assert_eq!(
            users.verify("li.wei", "wrong password").expect("verify"),
            None
        );
        assert_eq!(
            users
                .verify("nobody", "correct horse battery")
                .expect("verify"),
            None
        );
        // A second process's addition is seen without a restart.
        Users::in_data_dir(&dir)
            .add("zhang", Role::Technician, "technician password")
            .expect("add");
        assert_eq!(
            users
                .verify("zhang", "technician password")
                .expect("verify"),
            Some(Role::Technician)
        );
    }

    #[test]
    fn sessions_carry_role_and_csrf_and_end() {
        let s = Sessions::default();
        let t = s.start("li.wei", Role::Operator);
        let session = s.get(&t).expect("live");
        assert_eq!(
            (session.user.as_str(), session.role),
            ("li.wei", Role::Operator)
        );
        assert_eq!(session.csrf.len(), 64);
        assert!(s.get("forged").is_none());
        s.end(&t);
        assert!(s.get(&t).is_none());
    }

    #[test]
    fn an_address_is_slowed_down_exponentially_and_capped() {
        assert_eq!(address_delay(FREE_FAILURES - 1), Duration::ZERO);
        assert_eq!(address_delay(FREE_FAILURES), FIRST_DELAY);
        assert_eq!(address_delay(FREE_FAILURES + 2), FIRST_DELAY * 4);
        assert_eq!(address_delay(FREE_FAILURES + 40), MAX_DELAY);
        assert_eq!(address_delay(u32::MAX), MAX_DELAY);
        let l = LoginLimiter::default();
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        // Concurrent attempts are counted as they begin: the fourth is already refused.
        let held: Vec<Attempt> = (0..FREE_FAILURES)
            .map(|i| l.begin(a, &format!("u{i}")).expect("free"))
            .collect();
        let wait = l.begin(a, "u9").expect_err("slowed down");
        assert!(wait > Duration::ZERO && wait <= FIRST_DELAY, "{wait:?}");
        held.into_iter().for_each(|t| l.failed(t));
    }

    #[test]
    fn a_user_name_takes_a_few_guesses_a_minute_but_never_locks_its_user_out() {
        let l = LoginLimiter::default();
        let ip = |i: u8| -> IpAddr { IpAddr::from([10, 1, 0, i]) };
        let home: IpAddr = "192.168.1.5".parse().expect("ip");
        l.succeeded(l.begin(home, "li.wei").expect("first login"));
        // Guesses from ever-new addresses: a burst, then refused with a wait.
        for i in 0..USER_BURST as u8 {
            l.failed(l.begin(ip(i), "li.wei").expect("within the burst"));
        }
        let wait = l
            .begin(ip(200), "li.wei")
            .expect_err("spread guesses are slowed");
        assert!(wait <= USER_REFILL, "{wait:?}");
        // Other names are not affected, nor is the user at an address they logged in from.
        l.failed(l.begin(ip(201), "zhang").expect("another name"));
        let t = l
            .begin(home, "li.wei")
            .expect("the user is never locked out");
        // A check that could not run gives the guess back.
        l.abandoned(t);
        l.succeeded(l.begin(home, "li.wei").expect("again"));
    }

    #[test]
    fn the_limiter_keeps_a_bounded_number_of_entries() {
        let l = LoginLimiter::default();
        for i in 0..(MAX_ENTRIES as u32 + 500) {
            let ip = IpAddr::from(i.to_be_bytes());
            if let Ok(t) = l.begin(ip, &format!("name-{i}")) {
                l.failed(t);
            }
        }
        let g = l.lock();
        assert!(g.0.len() <= MAX_ENTRIES && g.1.len() <= MAX_ENTRIES);
    }

    #[test]
    fn removed_users_are_gone() {
        let dir = crate::testutil::temp_dir("users-rm");
        let users = Users::in_data_dir(&dir);
        users
            .add("li.wei", Role::Operator, "correct horse battery")
            .expect("add");
        assert_eq!(users.role("li.wei").expect("role"), Some(Role::Operator));
        assert!(users.remove("li.wei").expect("remove"));
        assert!(!users.remove("li.wei").expect("again"));
        assert_eq!(users.role("li.wei").expect("role"), None);
    }
}
