//! Rate limits as a map of "not before" times, with `now` passed in
//! (STYLE rule 6 and 8: no clock read inside).
//!
//! Used for "restart a direct replica's replication at most once per minute
//! per tablet" (`RestartArbitraryDirectReplica`, `RestartAllDirectReplicas`).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// Keys that acted recently, with when they may act again.
#[derive(Debug)]
pub struct CooldownMap<K> {
    /// Key → the first instant at which it may act again.
    until: HashMap<K, Instant>,
    /// How long a key waits after acting.
    period: Duration,
}

impl<K: Eq + Hash + Clone> CooldownMap<K> {
    /// An empty map whose keys wait `period` after each action.
    pub fn new(period: Duration) -> Self {
        CooldownMap {
            until: HashMap::new(),
            period,
        }
    }

    /// The cooldown period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Whether `key` may act at `now` (without recording anything).
    pub fn is_ready(&self, key: &K, now: Instant) -> bool {
        self.until.get(key).is_none_or(|until| now >= *until)
    }

    /// If `key` may act at `now`, records that it acts and returns true;
    /// otherwise returns false and changes nothing. Expired entries are
    /// dropped on the way, so the map stays as small as the set of keys in
    /// cooldown.
    pub fn try_acquire(&mut self, key: &K, now: Instant) -> bool {
        self.until.retain(|_, until| *until > now);
        if self.until.contains_key(key) {
            return false;
        }
        self.until.insert(key.clone(), now + self.period);
        true
    }

    /// Number of keys currently in cooldown at `now`.
    pub fn len_at(&self, now: Instant) -> usize {
        self.until.values().filter(|until| **until > now).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_acts_once_per_period_and_others_are_independent() {
        let t0 = crate::clock::now();
        let minute = Duration::from_secs(60);
        let mut map = CooldownMap::new(minute);
        assert!(map.try_acquire(&"a", t0));
        assert!(!map.try_acquire(&"a", t0 + Duration::from_secs(59)));
        assert!(map.try_acquire(&"b", t0 + Duration::from_secs(1)));
        assert!(!map.is_ready(&"a", t0 + Duration::from_secs(30)));
        assert!(map.is_ready(&"a", t0 + minute));
        assert!(map.try_acquire(&"a", t0 + minute));
        assert_eq!(map.len_at(t0 + minute), 2);
        assert_eq!(map.len_at(t0 + minute * 3), 0);
    }

    #[test]
    fn a_refused_attempt_does_not_extend_the_cooldown() {
        let t0 = crate::clock::now();
        let mut map = CooldownMap::new(Duration::from_secs(10));
        assert!(map.try_acquire(&1, t0));
        assert!(!map.try_acquire(&1, t0 + Duration::from_secs(9)));
        assert!(map.try_acquire(&1, t0 + Duration::from_secs(10)));
    }
}
