//! Who may use the web page and the API: users with argon2 password hashes,
//! roles, login sessions, CSRF tokens and login lock-out.
//!
//! Invariants:
//! - There is no default password. Until an admin exists, the only way in is
//!   the one-time setup token printed at start (or a hash provisioned in the
//!   configuration), and it is consumed by the first successful setup.
//! - Passwords are stored only as argon2id hashes, in `web/users.json` in the
//!   data directory (mode 0600, replaced atomically). Hashing runs on the
//!   blocking pool, one at a time, so a burst of logins cannot take the
//!   gateway's memory (each hash takes 19 MiB for a moment).
//! - Sessions live in memory (a restart logs everyone out), at most
//!   [`MAX_SESSIONS`]; each has its own CSRF token, which every
//!   state-changing request must carry (form field or `X-CSRF-Token`).
//! - After [`LOCK_AFTER`] failed logins in a row a user name is locked for
//!   [`LOCK_FOR`], even for the right password; a client address with
//!   [`IP_LOCK_AFTER`] failures is locked too. Both tables are bounded; a lock
//!   that has not run out is never evicted to make room (so failures with
//!   other names cannot unlock a name), and failures of a name that exists
//!   are always counted.
//! - The setup token is taken in the same step that checks it: two setups at
//!   once make one admin.
//! - There is always an admin: the last one can be neither removed nor
//!   given another role.
//! - Failed logins reach the audit trail at most [`AUDITS_PER_MINUTE`] a
//!   minute (the rest are counted into the next one), so a client that is
//!   not logged in cannot fill the log.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use serde::{Deserialize, Serialize};

/// Consecutive failed logins that lock a user name.
pub const LOCK_AFTER: u32 = 10;
/// Failed logins from one address (any user names) that lock the address.
pub const IP_LOCK_AFTER: u32 = 30;
/// How long a lock lasts.
pub const LOCK_FOR: Duration = Duration::from_secs(15 * 60);
/// Open sessions kept; the oldest is ended when a new one would exceed it.
pub const MAX_SESSIONS: usize = 256;
/// Tracked user names and addresses with recent failures.
const MAX_TRACKED: usize = 1024;
/// Failed logins written to the audit trail per minute.
pub const AUDITS_PER_MINUTE: u32 = 20;
pub const MIN_PASSWORD: usize = 8;
const MAX_PASSWORD: usize = 256;

/// What a user may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees everything except secrets.
    Viewer,
    /// Also writes to devices, commissions them and exports data.
    Technician,
    /// Also changes the configuration and the users.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Technician => "technician",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "technician" => Some(Role::Technician),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    name: String,
    role: Role,
    hash: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct UsersFile {
    users: Vec<User>,
}

/// An API token for a machine: only its SHA-256 is kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Token {
    name: String,
    role: Role,
    sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokensFile {
    tokens: Vec<Token>,
}

/// Prefix of API tokens, so a leaked one is recognisable.
pub const TOKEN_PREFIX: &str = "opt_";

fn sha256_hex(s: &str) -> String {
    use std::fmt::Write;
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let mut out = String::with_capacity(64);
    for b in d.as_ref() {
        let _infallible = write!(out, "{b:02x}");
    }
    out
}

/// A logged-in user, as a request sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub csrf: String,
    pub expires: Instant,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("wrong user name or password")]
    Wrong,
    #[error("too many failed logins: locked for {0} more minute(s)")]
    Locked(u64),
    #[error("the setup token is wrong")]
    BadToken,
    #[error("the gateway is already set up; log in instead")]
    AlreadySetUp,
    #[error("{0}")]
    Invalid(String),
    #[error("cannot save the users: {0}")]
    Storage(String),
}

#[derive(Debug, Default)]
struct Failures {
    count: u32,
    last: Option<Instant>,
    locked_until: Option<Instant>,
}

#[derive(Debug)]
pub struct Auth {
    path: PathBuf,
    users: Mutex<BTreeMap<String, User>>,
    setup_token: Mutex<Option<String>>,
    sessions: Mutex<HashMap<String, Session>>,
    by_user: Mutex<HashMap<String, Failures>>,
    by_ip: Mutex<HashMap<IpAddr, Failures>>,
    tokens: Mutex<BTreeMap<String, Token>>,
    ttl: Duration,
    /// One password hash at a time.
    hashing: tokio::sync::Semaphore,
    audits: Mutex<AuditBudget>,
}

/// The failed-login audit budget of the current minute.
#[derive(Debug, Default)]
struct AuditBudget {
    minute: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl Auth {
    /// Loads the users from `dir/users.json`. With none, takes the
    /// provisioned admin hash if there is one, else makes a setup token
    /// (written to `dir/setup-token` too) and returns it for printing.
    pub fn open(
        dir: &Path,
        ttl: Duration,
        provisioned: Option<&str>,
    ) -> Result<(Auth, Option<String>), AuthError> {
        std::fs::create_dir_all(dir).map_err(|e| storage(dir, &e))?;
        let path = dir.join("users.json");
        let users: BTreeMap<String, User> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<UsersFile>(&bytes)
                .map_err(|e| AuthError::Storage(format!("{}: {e}", path.display())))?
                .users
                .into_iter()
                .map(|u| (u.name.clone(), u))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(storage(&path, &e)),
        };
        let tokens_path = dir.join("tokens.json");
        let tokens: BTreeMap<String, Token> = match std::fs::read(&tokens_path) {
            Ok(bytes) => serde_json::from_slice::<TokensFile>(&bytes)
                .map_err(|e| AuthError::Storage(format!("{}: {e}", tokens_path.display())))?
                .tokens
                .into_iter()
                .map(|t| (t.name.clone(), t))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(storage(&tokens_path, &e)),
        };
        let auth = Auth {
            path,
            tokens: Mutex::new(tokens),
            users: Mutex::new(users),
            setup_token: Mutex::new(None),
            sessions: Mutex::new(HashMap::new()),
            by_user: Mutex::new(HashMap::new()),
            by_ip: Mutex::new(HashMap::new()),
            ttl,
            hashing: tokio::sync::Semaphore::new(1),
            audits: Mutex::new(AuditBudget::default()),
        };
        let token_file = dir.join("setup-token");
        if auth.has_users() {
            let _gone = std::fs::remove_file(&token_file);
            return Ok((auth, None));
        }
        if let Some(hash) = provisioned {
            argon2::PasswordHash::new(hash)
                .map_err(|e| AuthError::Invalid(format!("the provisioned hash: {e}")))?;
            auth.store_user(User {
                name: "admin".into(),
                role: Role::Admin,
                hash: hash.to_string(),
            })?;
            return Ok((auth, None));
        }
        let token = setup_token()?;
        write_private(&token_file, format!("{token}\n").as_bytes())
            .map_err(|e| storage(&token_file, &e))?;
        if let Ok(mut t) = auth.setup_token.lock() {
            *t = Some(token.clone());
        }
        Ok((auth, Some(token)))
    }

    pub fn has_users(&self) -> bool {
        self.users.lock().is_ok_and(|u| !u.is_empty())
    }

    /// First-boot setup: with the right token, creates the admin and logs
    /// them in.
    pub async fn setup(
        &self,
        token: &str,
        user: &str,
        password: &str,
    ) -> Result<(String, Session), AuthError> {
        if self.has_users() {
            return Err(AuthError::AlreadySetUp);
        }
        check_name(user)?;
        check_password(password)?;
        let given = normalise_token(token);
        // Checked and taken under one lock: a second setup racing this one
        // finds no token.
        let taken = {
            let mut t = self
                .setup_token
                .lock()
                .map_err(|_| AuthError::Storage("the setup token is poisoned".into()))?;
            match t.as_deref() {
                Some(e) if constant_time_eq(e.as_bytes(), given.as_bytes()) => t.take(),
                Some(_) => return Err(AuthError::BadToken),
                None => return Err(AuthError::AlreadySetUp),
            }
        };
        let stored = match self.hash(password).await {
            Ok(hash) => self.store_user(User {
                name: user.to_string(),
                role: Role::Admin,
                hash,
            }),
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            // Nothing was set up: the token works again.
            if let Ok(mut t) = self.setup_token.lock() {
                *t = taken;
            }
            return Err(e);
        }
        if let Some(dir) = self.path.parent() {
            let _gone = std::fs::remove_file(dir.join("setup-token"));
        }
        self.start_session(user, Role::Admin)
    }

    /// Checks a login; on success returns the new session's token.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        from: IpAddr,
    ) -> Result<(String, Session), AuthError> {
        let now = Instant::now();
        if let Some(left) = self.locked(user, from, now) {
            return Err(AuthError::Locked(left.as_secs().div_ceil(60)));
        }
        let stored = self.users.lock().ok().and_then(|u| u.get(user).cloned());
        let ok = match &stored {
            Some(u) => self.verify(password, &u.hash).await,
            None => {
                // The same work for an unknown name, so timing does not
                // tell which names exist.
                let _same_work: Result<String, AuthError> = self.hash(password).await;
                false
            }
        };
        match stored {
            Some(u) if ok => {
                self.forget_failures(user, from);
                self.start_session(&u.name, u.role)
            }
            _ => match self.fail(user, from, Instant::now()) {
                Some(left) => Err(AuthError::Locked(left.as_secs().div_ceil(60))),
                None => Err(AuthError::Wrong),
            },
        }
    }

    /// The session of a cookie value, if it is open.
    pub fn session(&self, token: &str) -> Option<Session> {
        let mut sessions = self.sessions.lock().ok()?;
        let s = sessions.get(token)?.clone();
        if s.expires <= Instant::now() {
            sessions.remove(token);
            return None;
        }
        // A user removed or demoted since the login gets the new state.
        let role = self
            .users
            .lock()
            .ok()
            .and_then(|u| u.get(&s.user).map(|u| u.role));
        match role {
            Some(r) if r == s.role => Some(s),
            Some(r) => {
                let s = Session { role: r, ..s };
                sessions.insert(token.to_string(), s.clone());
                Some(s)
            }
            None => {
                sessions.remove(token);
                None
            }
        }
    }

    pub fn logout(&self, token: &str) {
        if let Ok(mut s) = self.sessions.lock() {
            s.remove(token);
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Users and their roles (never the hashes).
    pub fn users(&self) -> Vec<(String, Role)> {
        self.users
            .lock()
            .map(|u| u.values().map(|u| (u.name.clone(), u.role)).collect())
            .unwrap_or_default()
    }

    /// Adds a user or replaces one's password and role.
    pub async fn set_user(&self, name: &str, role: Role, password: &str) -> Result<(), AuthError> {
        check_name(name)?;
        check_password(password)?;
        let hash = self.hash(password).await?;
        self.store_user(User {
            name: name.to_string(),
            role,
            hash,
        })
    }

    /// Removes a user; the last admin cannot be removed.
    pub fn remove_user(&self, name: &str) -> Result<(), AuthError> {
        let mut users = self
            .users
            .lock()
            .map_err(|_| AuthError::Storage("the user table is poisoned".into()))?;
        let Some(u) = users.get(name) else {
            return Err(AuthError::Invalid(format!("no user \"{name}\"")));
        };
        let admins = users.values().filter(|u| u.role == Role::Admin).count();
        if u.role == Role::Admin && admins == 1 {
            return Err(AuthError::Invalid(
                "the last admin cannot be removed".into(),
            ));
        }
        let mut next = users.clone();
        next.remove(name);
        save(&self.path, &next)?;
        *users = next;
        Ok(())
    }

    /// Makes an API token for a machine; returns it (shown once: only its
    /// hash is kept). A token of the same name is replaced.
    pub fn create_token(&self, name: &str, role: Role) -> Result<String, AuthError> {
        check_name(name)?;
        let token = format!("{TOKEN_PREFIX}{}", random_hex()?);
        self.change_tokens(|t| {
            t.insert(
                name.to_string(),
                Token {
                    name: name.to_string(),
                    role,
                    sha256: sha256_hex(&token),
                },
            );
            Ok(())
        })?;
        Ok(token)
    }

    pub fn revoke_token(&self, name: &str) -> Result<(), AuthError> {
        self.change_tokens(|t| {
            t.remove(name)
                .map(|_| ())
                .ok_or_else(|| AuthError::Invalid(format!("no token \"{name}\"")))
        })
    }

    /// Token names and roles (never the tokens).
    pub fn tokens(&self) -> Vec<(String, Role)> {
        self.tokens
            .lock()
            .map(|t| t.values().map(|t| (t.name.clone(), t.role)).collect())
            .unwrap_or_default()
    }

    /// The machine a bearer token stands for: `token:<name>` and its role.
    pub fn bearer(&self, token: &str) -> Option<(String, Role)> {
        if !token.starts_with(TOKEN_PREFIX) {
            return None;
        }
        let h = sha256_hex(token);
        let t = self.tokens.lock().ok()?;
        t.values()
            .find(|t| constant_time_eq(t.sha256.as_bytes(), h.as_bytes()))
            .map(|t| (format!("token:{}", t.name), t.role))
    }

    fn change_tokens(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, Token>) -> Result<(), AuthError>,
    ) -> Result<(), AuthError> {
        let mut tokens = self
            .tokens
            .lock()
            .map_err(|_| AuthError::Storage("the token table is poisoned".into()))?;
        let mut next = tokens.clone();
        f(&mut next)?;
        let file = TokensFile {
            tokens: next.values().cloned().collect(),
        };
        let bytes =
            serde_json::to_vec_pretty(&file).map_err(|e| AuthError::Storage(e.to_string()))?;
        let path = self.path.with_file_name("tokens.json");
        write_private(&path, &bytes).map_err(|e| storage(&path, &e))?;
        *tokens = next;
        Ok(())
    }

    fn store_user(&self, user: User) -> Result<(), AuthError> {
        let mut users = self
            .users
            .lock()
            .map_err(|_| AuthError::Storage("the user table is poisoned".into()))?;
        let admins = users.values().filter(|u| u.role == Role::Admin).count();
        if users.get(&user.name).is_some_and(|u| u.role == Role::Admin)
            && user.role != Role::Admin
            && admins == 1
        {
            return Err(AuthError::Invalid(
                "the last admin cannot be given another role: make another admin first".into(),
            ));
        }
        let mut next = users.clone();
        next.insert(user.name.clone(), user);
        save(&self.path, &next)?;
        *users = next;
        Ok(())
    }

    fn start_session(&self, user: &str, role: Role) -> Result<(String, Session), AuthError> {
        let token = random_hex()?;
        let session = Session {
            user: user.to_string(),
            role,
            csrf: random_hex()?,
            expires: Instant::now() + self.ttl,
        };
        if let Ok(mut s) = self.sessions.lock() {
            let now = Instant::now();
            s.retain(|_, v| v.expires > now);
            if s.len() >= MAX_SESSIONS {
                if let Some(oldest) = s
                    .iter()
                    .min_by_key(|(_, v)| v.expires)
                    .map(|(k, _)| k.clone())
                {
                    s.remove(&oldest);
                }
            }
            s.insert(token.clone(), session.clone());
        }
        Ok((token, session))
    }

    async fn hash(&self, password: &str) -> Result<String, AuthError> {
        let _one = self
            .hashing
            .acquire()
            .await
            .map_err(|_| AuthError::Storage("closed".into()))?;
        let pw = password.to_string();
        let salt = random_bytes::<16>()?;
        tokio::task::spawn_blocking(move || {
            argon2::Argon2::default()
                .hash_password_with_salt(pw.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| AuthError::Storage(format!("hashing: {e}")))
        })
        .await
        .map_err(|e| AuthError::Storage(e.to_string()))?
    }

    async fn verify(&self, password: &str, hash: &str) -> bool {
        let Ok(_one) = self.hashing.acquire().await else {
            return false;
        };
        let (pw, hash) = (password.to_string(), hash.to_string());
        tokio::task::spawn_blocking(move || {
            argon2::Argon2::default()
                .verify_password(pw.as_bytes(), hash.as_str())
                .is_ok()
        })
        .await
        .unwrap_or(false)
    }

    /// Time left on a lock of `user` or `from`.
    fn locked(&self, user: &str, from: IpAddr, now: Instant) -> Option<Duration> {
        let left = |f: &Failures| {
            f.locked_until
                .filter(|t| *t > now)
                .map(|t| t.duration_since(now))
        };
        let u = self
            .by_user
            .lock()
            .ok()
            .and_then(|m| m.get(user).and_then(left));
        let i = self
            .by_ip
            .lock()
            .ok()
            .and_then(|m| m.get(&from).and_then(left));
        u.max(i)
    }

    /// Records a failure; returns the lock's length if this one locks.
    fn fail(&self, user: &str, from: IpAddr, now: Instant) -> Option<Duration> {
        let mut locked = None;
        let exists = self.users.lock().is_ok_and(|u| u.contains_key(user));
        if let Ok(mut m) = self.by_user.lock() {
            if bump(&mut m, user.to_string(), now, LOCK_AFTER, exists) {
                locked = Some(LOCK_FOR);
            }
        }
        if let Ok(mut m) = self.by_ip.lock() {
            if bump(&mut m, from, now, IP_LOCK_AFTER, false) {
                locked = Some(LOCK_FOR);
            }
        }
        locked
    }

    /// Whether a failed login at `now` goes to the audit trail; if so, with
    /// the number of failures left out since the last one that did.
    pub fn audit_failure(&self, now: Instant) -> Option<u64> {
        let mut b = self.audits.lock().ok()?;
        if b.minute
            .is_none_or(|m| now.duration_since(m) >= Duration::from_secs(60))
        {
            b.minute = Some(now);
            b.used = 0;
        }
        if b.used >= AUDITS_PER_MINUTE {
            b.suppressed += 1;
            return None;
        }
        b.used += 1;
        Some(std::mem::take(&mut b.suppressed))
    }

    fn forget_failures(&self, user: &str, from: IpAddr) {
        if let Ok(mut m) = self.by_user.lock() {
            m.remove(user);
        }
        if let Ok(mut m) = self.by_ip.lock() {
            m.remove(&from);
        }
    }
}

/// Counts one failure of `key`; true when it reaches `limit` (locked now).
/// A full table makes room by forgetting the oldest entry that is not
/// locked; when every entry is locked, a `key` that is not `always` counted
/// is not tracked (the table grows past its bound only by names that exist).
fn bump<K: std::hash::Hash + Eq + Clone>(
    m: &mut HashMap<K, Failures>,
    key: K,
    now: Instant,
    limit: u32,
    always: bool,
) -> bool {
    let locked = |f: &Failures| f.locked_until.is_some_and(|t| t > now);
    if m.len() >= MAX_TRACKED && !m.contains_key(&key) {
        m.retain(|_, f| locked(f) || f.last.is_some_and(|t| now.duration_since(t) < LOCK_FOR));
        if m.len() >= MAX_TRACKED {
            let oldest = m
                .iter()
                .filter(|(_, f)| !locked(f))
                .min_by_key(|(_, f)| f.last)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    m.remove(&k);
                }
                None if !always => return false,
                None => {}
            }
        }
    }
    let f = m.entry(key).or_default();
    // A lock that has run out, or failures long ago, start afresh.
    if f.locked_until.is_some_and(|t| t <= now)
        || f.last.is_some_and(|t| now.duration_since(t) >= LOCK_FOR)
    {
        *f = Failures::default();
    }
    f.count += 1;
    f.last = Some(now);
    if f.count >= limit {
        f.locked_until = Some(now + LOCK_FOR);
        true
    } else {
        false
    }
}

/// 1 to 64 letters, digits, `-`, `_` or `.`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn check_name(name: &str) -> Result<(), AuthError> {
    if !valid_name(name) {
        return Err(AuthError::Invalid(
            "a user name is 1 to 64 letters, digits, `-`, `_` or `.`".into(),
        ));
    }
    Ok(())
}

fn check_password(pw: &str) -> Result<(), AuthError> {
    let n = pw.chars().count();
    if n < MIN_PASSWORD || pw.len() > MAX_PASSWORD {
        return Err(AuthError::Invalid(format!(
            "a password is {MIN_PASSWORD} to {MAX_PASSWORD} characters"
        )));
    }
    Ok(())
}

fn save(path: &Path, users: &BTreeMap<String, User>) -> Result<(), AuthError> {
    let file = UsersFile {
        users: users.values().cloned().collect(),
    };
    let bytes = serde_json::to_vec_pretty(&file).map_err(|e| AuthError::Storage(e.to_string()))?;
    write_private(path, &bytes).map_err(|e| storage(path, &e))
}

fn storage(path: &Path, e: &std::io::Error) -> AuthError {
    AuthError::Storage(format!("{}: {e}", path.display()))
}

/// Writes a file only its owner can read: to a temporary name, synced, then
/// renamed over the old one, so a power cut leaves the old or the new.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _synced = d.sync_all();
        }
    }
    Ok(())
}

/// Bytes from the system's random source. Its failure is an error, never
/// a weak token.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], AuthError> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| AuthError::Storage("the system random source failed".into()))?;
    Ok(b)
}

/// 32 random bytes as 64 hex digits.
pub fn random_hex() -> Result<String, AuthError> {
    use std::fmt::Write;
    let mut s = String::with_capacity(64);
    for b in random_bytes::<32>()? {
        let _infallible = write!(s, "{b:02x}");
    }
    Ok(s)
}

/// 12 characters from an alphabet without look-alikes, as `XXXX-XXXX-XXXX`.
fn setup_token() -> Result<String, AuthError> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
    let bytes = random_bytes::<12>()?;
    let mut s = String::with_capacity(14);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 && i % 4 == 0 {
            s.push('-');
        }
        let c = ALPHABET[usize::from(*b) % ALPHABET.len()];
        s.push(char::from(c));
    }
    Ok(s)
}

/// Upper case, without spaces; dashes kept where the user typed them or not.
fn normalise_token(t: &str) -> String {
    let clean: String = t
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let mut s = String::with_capacity(14);
    for (i, c) in clean.chars().enumerate() {
        if i > 0 && i % 4 == 0 {
            s.push('-');
        }
        s.push(c);
    }
    s
}

/// Compares without an early exit (`subtle`), so timing does not reveal a
/// prefix.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn fresh() -> (tempfile::TempDir, Auth, String) {
        let dir = tempfile::tempdir().unwrap();
        let (auth, token) = Auth::open(dir.path(), Duration::from_secs(60), None).unwrap();
        (dir, auth, token.unwrap())
    }

    #[tokio::test]
    async fn setup_needs_the_token_and_happens_once() {
        let (dir, auth, token) = fresh();
        assert!(!auth.has_users());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("setup-token")).unwrap(),
            format!("{token}\n")
        );
        assert_eq!(
            auth.setup("WRONG-TOKEN-0000", "admin", "long enough").await,
            Err(AuthError::BadToken)
        );
        assert!(matches!(
            auth.setup(&token, "admin", "short").await,
            Err(AuthError::Invalid(_))
        ));
        // Typed in lower case without dashes is the same token.
        let typed = token.replace('-', "").to_lowercase();
        let (cookie, s) = auth.setup(&typed, "admin", "long enough").await.unwrap();
        assert_eq!(s.role, Role::Admin);
        assert_eq!(auth.session(&cookie).map(|s| s.user), Some("admin".into()));
        assert_eq!(
            auth.setup(&token, "other", "long enough").await,
            Err(AuthError::AlreadySetUp)
        );
        assert!(!dir.path().join("setup-token").exists());
        // Stored as a hash, and read back by the next start.
        let file = std::fs::read_to_string(dir.path().join("users.json")).unwrap();
        assert!(file.contains("$argon2id$"), "{file}");
        assert!(!file.contains("long enough"));
        let (again, token) = Auth::open(dir.path(), Duration::from_secs(60), None).unwrap();
        assert!(token.is_none());
        assert!(again.login("admin", "long enough", IP).await.is_ok());
    }

    #[tokio::test]
    async fn ten_failures_lock_the_name_even_for_the_right_password() {
        let (_dir, auth, token) = fresh();
        auth.setup(&token, "admin", "right password").await.unwrap();
        for i in 1..LOCK_AFTER {
            assert_eq!(
                auth.login("admin", "wrong", IP).await,
                Err(AuthError::Wrong),
                "attempt {i}"
            );
        }
        assert_eq!(
            auth.login("admin", "wrong", IP).await,
            Err(AuthError::Locked(15))
        );
        assert!(matches!(
            auth.login("admin", "right password", IP).await,
            Err(AuthError::Locked(_))
        ));
    }

    #[test]
    fn a_lock_runs_out_and_counting_starts_again() {
        let mut m = HashMap::new();
        let t0 = Instant::now();
        for _ in 1..3 {
            assert!(!bump(&mut m, "a", t0, 3, false));
        }
        assert!(bump(&mut m, "a", t0, 3, false));
        let later = t0 + LOCK_FOR + Duration::from_secs(1);
        assert!(!bump(&mut m, "a", later, 3, false));
        assert_eq!(m["a"].count, 1);
    }

    #[test]
    fn the_failure_table_is_bounded() {
        let mut m = HashMap::new();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED + 50) {
            bump(&mut m, i, t0 + Duration::from_millis(i as u64), 10, false);
        }
        assert!(m.len() <= MAX_TRACKED);
    }

    #[tokio::test]
    async fn failures_with_other_names_cannot_evict_a_lock() {
        let (_dir, auth, token) = fresh();
        auth.setup(&token, "admin", "right password").await.unwrap();
        let t0 = Instant::now();
        for _ in 0..LOCK_AFTER {
            auth.fail("admin", IP, t0);
        }
        assert!(auth.locked("admin", IP, t0).is_some());
        // Every other name from its own address, more than the table holds.
        for i in 0..(MAX_TRACKED as u32 * 2) {
            let from = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let at = t0 + Duration::from_millis(u64::from(i));
            for _ in 0..LOCK_AFTER {
                auth.fail(&format!("guess{i}"), from, at);
            }
        }
        let later = t0 + Duration::from_secs(60);
        assert!(
            auth.locked("admin", IP, later).is_some(),
            "the admin's lock was evicted"
        );
        assert!(auth.by_user.lock().unwrap().len() <= MAX_TRACKED + 1);
        assert!(auth.by_ip.lock().unwrap().len() <= MAX_TRACKED);
        assert!(matches!(
            auth.login("admin", "right password", IP).await,
            Err(AuthError::Locked(_))
        ));
        // A name that exists is counted even with the table full of locks.
        auth.set_user("tech", Role::Technician, "tech password")
            .await
            .unwrap();
        for _ in 0..LOCK_AFTER {
            auth.fail("tech", IP, later);
        }
        assert!(auth.locked("tech", IP, later).is_some());
    }

    #[tokio::test]
    async fn two_setups_at_once_make_one_admin() {
        for _ in 0..5 {
            let (_dir, auth, token) = fresh();
            let (a, b) = tokio::join!(
                auth.setup(&token, "first", "long enough"),
                auth.setup(&token, "second", "long enough"),
            );
            assert_eq!(
                [a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count(),
                1,
                "{a:?} {b:?}"
            );
            assert_eq!(auth.users().len(), 1, "{:?}", auth.users());
            let loser = if a.is_ok() { b } else { a };
            assert_eq!(loser.map(|_| ()), Err(AuthError::AlreadySetUp));
        }
    }

    #[tokio::test]
    async fn the_last_admin_cannot_be_demoted() {
        let (_dir, auth, token) = fresh();
        auth.setup(&token, "admin", "right password").await.unwrap();
        let demoted = auth.set_user("admin", Role::Viewer, "right password").await;
        assert!(matches!(demoted, Err(AuthError::Invalid(_))), "{demoted:?}");
        assert_eq!(auth.users(), vec![("admin".to_string(), Role::Admin)]);
        // With a second admin it can.
        auth.set_user("other", Role::Admin, "other password")
            .await
            .unwrap();
        auth.set_user("admin", Role::Viewer, "right password")
            .await
            .unwrap();
        assert!(matches!(
            auth.set_user("other", Role::Technician, "other password")
                .await,
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn failed_login_audits_are_rate_limited_and_counted() {
        let (_dir, auth, _) = fresh();
        let t0 = Instant::now();
        for _ in 0..AUDITS_PER_MINUTE {
            assert_eq!(auth.audit_failure(t0), Some(0));
        }
        for _ in 0..500 {
            assert_eq!(auth.audit_failure(t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(auth.audit_failure(t0 + Duration::from_secs(61)), Some(500));
        assert_eq!(auth.audit_failure(t0 + Duration::from_secs(62)), Some(0));
    }

    #[tokio::test]
    async fn the_last_admin_stays_and_removed_users_lose_their_sessions() {
        let (_dir, auth, token) = fresh();
        auth.setup(&token, "admin", "right password").await.unwrap();
        assert!(matches!(
            auth.remove_user("admin"),
            Err(AuthError::Invalid(_))
        ));
        auth.set_user("tech", Role::Technician, "tech password")
            .await
            .unwrap();
        let (cookie, _) = auth.login("tech", "tech password", IP).await.unwrap();
        assert_eq!(
            auth.session(&cookie).map(|s| s.role),
            Some(Role::Technician)
        );
        auth.remove_user("tech").unwrap();
        assert_eq!(auth.session(&cookie), None);
    }

    #[tokio::test]
    async fn a_provisioned_hash_is_the_admin_password() {
        let dir = tempfile::tempdir().unwrap();
        let salt = random_bytes::<16>().unwrap();
        let hash = argon2::Argon2::default()
            .hash_password_with_salt(b"provisioned pw", &salt)
            .unwrap()
            .to_string();
        let (auth, token) = Auth::open(dir.path(), Duration::from_secs(60), Some(&hash)).unwrap();
        assert!(token.is_none());
        assert!(auth.login("admin", "provisioned pw", IP).await.is_ok());
        let bad = Auth::open(
            tempfile::tempdir().unwrap().path(),
            Duration::from_secs(60),
            Some("$argon2id$nonsense"),
        );
        assert!(matches!(bad, Err(AuthError::Invalid(_))));
    }

    #[test]
    fn api_tokens_are_kept_as_hashes_and_can_be_revoked() {
        let (dir, auth, _) = fresh();
        let t = auth.create_token("scada", Role::Viewer).unwrap();
        assert!(t.starts_with(TOKEN_PREFIX) && t.len() == TOKEN_PREFIX.len() + 64);
        assert_eq!(auth.bearer(&t), Some(("token:scada".into(), Role::Viewer)));
        assert_eq!(auth.bearer("opt_0000"), None);
        assert_eq!(auth.bearer(&t[1..]), None);
        let file = std::fs::read_to_string(dir.path().join("tokens.json")).unwrap();
        assert!(!file.contains(&t[4..]), "the token itself was stored");
        // Kept across a restart.
        let (again, _) = Auth::open(dir.path(), Duration::from_secs(60), None).unwrap();
        assert_eq!(again.bearer(&t).map(|b| b.1), Some(Role::Viewer));
        again.revoke_token("scada").unwrap();
        assert_eq!(again.bearer(&t), None);
        assert!(matches!(
            again.revoke_token("scada"),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn tokens_compare_in_constant_time_and_normalise() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert_eq!(normalise_token("abcd efgh-jkmn"), "ABCD-EFGH-JKMN");
        let t = setup_token().unwrap();
        assert_eq!(t.len(), 14);
        assert_eq!(normalise_token(&t), t);
    }
}
