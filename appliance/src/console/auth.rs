//! Console users, sessions and login throttling.
//!
//! Users live in `<data_dir>/users.json` (written by `screenline user add`, read again by the
//! running console when it changes), each with an argon2id PHC hash and a role. A session is
//! a random 256-bit token in an `HttpOnly; SameSite=Strict` cookie, held in memory only (a
//! restart logs everyone out), with its own CSRF token for every form that changes
//! something; it ends after 30 idle minutes or 12 hours. Failed logins are limited per
//! client address and per user name.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
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
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.file_err(e))?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&file).map_err(|e| self.file_err(e))?;
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
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        Ok(entry.filter(|_| ok).map(|e| e.role))
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

/// Failed logins allowed per address and per user name within [`LOCKOUT`]…
pub const MAX_FAILURES: usize = 5;
/// …after which further attempts are refused until the oldest failure is this old.
pub const LOCKOUT: Duration = Duration::from_secs(15 * 60);

/// Login throttling by client address and by user name.
#[derive(Default)]
pub struct LoginLimiter(Mutex<HashMap<String, VecDeque<Instant>>>);

impl LoginLimiter {
    fn keys(ip: IpAddr, user: &str) -> [String; 2] {
        [format!("ip:{ip}"), format!("user:{user}")]
    }

    /// How long until `ip` may try `user` again, if it must wait.
    pub fn wait(&self, ip: IpAddr, user: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Self::keys(ip, user)
            .iter()
            .filter_map(|k| {
                let q = map.get_mut(k)?;
                while q.front().is_some_and(|t| now.duration_since(*t) >= LOCKOUT) {
                    q.pop_front();
                }
                (q.len() >= MAX_FAILURES)
                    .then(|| q.front().map(|t| LOCKOUT - now.duration_since(*t)))
                    .flatten()
            })
            .max()
    }

    /// Records a failed attempt.
    pub fn failed(&self, ip: IpAddr, user: &str) {
        let now = Instant::now();
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 10_000 {
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < LOCKOUT));
        }
        for k in Self::keys(ip, user) {
            let q = map.entry(k).or_default();
            q.push_back(now);
            if q.len() > MAX_FAILURES {
                q.pop_front();
            }
        }
    }

    /// A successful login clears the user name's failures (not the address's).
    pub fn succeeded(&self, user: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&format!("user:{user}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_added_hashed_and_verified() {
        let dir = std::env::temp_dir().join(format!("sl-users-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
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
        let _ = std::fs::remove_dir_all(&dir);
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
    fn logins_are_throttled_per_address_and_per_user() {
        let l = LoginLimiter::default();
        let (a, b): (IpAddr, IpAddr) = (
            "127.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        );
        for _ in 0..MAX_FAILURES {
            assert!(l.wait(a, "li.wei").is_none());
            l.failed(a, "li.wei");
        }
        let wait = l.wait(a, "li.wei").expect("locked");
        assert!(wait > LOCKOUT - Duration::from_secs(5) && wait <= LOCKOUT);
        // The same address is locked for any name, and the name from any address.
        assert!(l.wait(a, "zhang").is_some());
        assert!(l.wait(b, "li.wei").is_some());
        assert!(l.wait(b, "zhang").is_none());
    }
}
