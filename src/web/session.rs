//! Console sessions: ids from the OS RNG, kept in memory by their SHA-256
//! only (a heap dump or a log line never holds a usable id), each with its
//! own CSRF token; forgotten after the configured idle time.

use parking_lot::Mutex;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Beyond this many sessions, anonymous (login page) ones are dropped
/// first: a flood of login-page visits cannot grow memory without bound.
const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Session {
    /// None: the login page's pre-login session (holds only a CSRF token).
    pub user: Option<String>,
    pub csrf: String,
    last: Instant,
}

/// What a presented session id turned out to be.
#[derive(Debug, Clone)]
pub enum Lookup {
    Valid(Session),
    /// Known but idle too long (now forgotten).
    Expired,
    /// Never issued here (or forgotten: a restart, a logout).
    Unknown,
}

pub struct Sessions {
    idle: Duration,
    map: Mutex<HashMap<[u8; 32], Session>>,
}

/// 32 bytes from the OS RNG, hex.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// Equal strings, compared in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Sessions {
    pub fn new(idle: Duration) -> Sessions {
        Sessions {
            idle,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// A new session; returns its id (only the caller ever sees it).
    pub fn create(&self, user: Option<String>) -> (String, Session) {
        let id = random_token();
        let s = Session {
            user,
            csrf: random_token(),
            last: Instant::now(),
        };
        let mut map = self.map.lock();
        if map.len() >= MAX_SESSIONS {
            let idle = self.idle;
            map.retain(|_, s| s.last.elapsed() < idle);
            if map.len() >= MAX_SESSIONS {
                map.retain(|_, s| s.user.is_some());
            }
        }
        map.insert(key(&id), s.clone());
        (id, s)
    }

    /// Look a presented id up; a valid session's idle timer restarts.
    pub fn get(&self, id: &str) -> Lookup {
        let k = key(id);
        let mut map = self.map.lock();
        match map.get_mut(&k) {
            None => Lookup::Unknown,
            Some(s) if s.last.elapsed() >= self.idle => {
                map.remove(&k);
                Lookup::Expired
            }
            Some(s) => {
                s.last = Instant::now();
                Lookup::Valid(s.clone())
            }
        }
    }

    pub fn remove(&self, id: &str) {
        self.map.lock().remove(&key(id));
    }

    /// Log in: the session presented before (if any) ends and a new one
    /// with a new id and CSRF token begins (no session fixation).
    pub fn login(&self, old: Option<&str>, user: &str) -> (String, Session) {
        if let Some(old) = old {
            self.remove(old);
        }
        self.create(Some(user.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_login_replaces_the_old_one() {
        let s = Sessions::new(Duration::from_secs(60));
        let (anon, a) = s.create(None);
        assert_eq!(anon.len(), 64);
        assert!(a.user.is_none());
        let (id, logged) = s.login(Some(&anon), "alice");
        assert_ne!(id, anon);
        assert_ne!(logged.csrf, a.csrf);
        assert!(matches!(s.get(&anon), Lookup::Unknown));
        assert!(matches!(s.get(&id), Lookup::Valid(x) if x.user.as_deref() == Some("alice")));
        // Only hashes are kept.
        assert!(!s.map.lock().keys().any(|k| hex::encode(k) == id));
        s.remove(&id);
        assert!(matches!(s.get(&id), Lookup::Unknown));
    }

    #[test]
    fn idle_sessions_expire() {
        let s = Sessions::new(Duration::from_millis(50));
        let (id, _) = s.create(Some("bob".into()));
        assert!(matches!(s.get(&id), Lookup::Valid(_)));
        std::thread::sleep(Duration::from_millis(80));
        assert!(matches!(s.get(&id), Lookup::Expired));
        assert!(matches!(s.get(&id), Lookup::Unknown));
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
        assert!(!constant_time_eq("", "a"));
    }
}
