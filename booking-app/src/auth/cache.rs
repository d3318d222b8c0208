//! Verified tokens remembered until they expire, so a client sending the same token on every
//! request (loadgen, a browser session) pays for one signature check, not one per request.
//! Bounded: past `capacity` the expired entries go, and if that frees nothing, all of them.

use std::sync::Mutex;

// Tokens come from clients: a randomly seeded hash, and cheaper than SipHash over ~300 bytes.
use ahash::HashMap;

use super::Identity;

pub struct TokenCache {
    capacity: usize,
    entries: Mutex<HashMap<Box<str>, (Identity, u64)>>,
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(HashMap::default()),
        }
    }

    /// The identity of `token` if it was verified before and its `exp` is after `now`.
    pub fn get(&self, token: &str, now: u64) -> Option<Identity> {
        let entries = self.entries.lock().expect("token cache lock");
        entries
            .get(token)
            .filter(|(_, exp)| *exp > now)
            .map(|(identity, _)| identity.clone())
    }

    pub fn insert(&self, token: &str, identity: Identity, exp: u64, now: u64) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().expect("token cache lock");
        if entries.len() >= self.capacity {
            entries.retain(|_, (_, e)| *e > now);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(token.into(), (identity, exp));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity {
            user: "alice".into(),
            admin: false,
        }
    }

    #[test]
    fn entries_expire_and_the_size_is_bounded() {
        let cache = TokenCache::new(2);
        cache.insert("a", alice(), 100, 0);
        assert_eq!(cache.get("a", 99), Some(alice()));
        assert_eq!(cache.get("a", 100), None, "expired at exp");
        cache.insert("b", alice(), 50, 0);
        // Full: the entry expired by now=60 makes room.
        cache.insert("c", alice(), 200, 60);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("b", 60), None);
        // Full of live entries: cleared rather than grown.
        cache.insert("d", alice(), 300, 60);
        assert_eq!(cache.len(), 1);
        assert!(cache.get("d", 60).is_some());
    }
}
