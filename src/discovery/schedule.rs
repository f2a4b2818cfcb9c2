//! When to poll which tablet: a pure scheduler (time is a parameter).
//!
//! Rules:
//! - A new tablet, or one whose health stream reported something, is polled
//!   at once (the *urgent* queue, served before anything else).
//! - Otherwise a tablet is polled every `poll_interval` (measured from the
//!   start of its previous poll), slightly early by a random jitter so that
//!   tablets discovered together spread out over the interval.
//! - At most one poll per tablet is in flight. A trigger during a poll
//!   queues exactly one more poll right after it.
//! - At most `workers` polls are *active*. A poll that has run for
//!   `slow_after` is marked slow and stops counting against the limit: it
//!   costs no CPU while it waits for its deadline, and counting it would let
//!   a set of hung tablets starve the healthy ones.
//! - A tablet whose polls fail as unreachable backs off: the interval doubles
//!   per consecutive failure up to `max_backoff_factor` times. Its health
//!   stream still triggers an immediate poll when the tablet comes back.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    time::Duration,
};

use rand::Rng;
use tokio::time::Instant;

use crate::proto::topodata::TabletAlias;

/// Scheduler settings.
#[derive(Clone, Debug)]
pub struct ScheduleConfig {
    /// Interval between polls of a reachable tablet (`--instance-poll-time`).
    pub poll_interval: Duration,
    /// Most polls active at once (`--discovery-workers`).
    pub workers: usize,
    /// A poll running this long is marked slow (hung) and frees its worker.
    pub slow_after: Duration,
    /// Largest multiple of `poll_interval` an unreachable tablet waits.
    pub max_backoff_factor: u32,
    /// Polls come up to this fraction of the interval early (0 = no jitter).
    pub jitter: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            poll_interval: Duration::from_secs(5),
            workers: 300,
            slow_after: Duration::from_secs(1),
            max_backoff_factor: 4,
            jitter: 0.1,
        }
    }
}

/// How a poll ended, as far as scheduling cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollEnd {
    /// The tablet answered (even with an error status).
    Answered,
    /// The tablet could not be reached or did not answer in time.
    Unreachable,
}

/// One tablet's schedule.
#[derive(Clone, Debug)]
struct Entry {
    /// When the next regular poll is due; `None` while in flight or queued urgently.
    due: Option<Instant>,
    /// Start of the poll in flight; `None` = no poll in flight.
    started: Option<Instant>,
    /// When the slow poll in flight is next re-marked as still running;
    /// `None` = no poll in flight, or it is not slow (still holds a worker).
    slow_mark: Option<Instant>,
    /// Whether a poll was asked for while one was in flight.
    again: bool,
    /// Whether the tablet sits in the urgent queue.
    urgent: bool,
    /// Consecutive unreachable polls (0 = the last poll was answered).
    failures: u32,
    /// Whether the tablet has been polled at least once.
    polled_once: bool,
}

/// The poll schedule of every watched tablet.
#[derive(Debug)]
pub struct PollSchedule {
    /// Settings.
    config: ScheduleConfig,
    /// Per-tablet state.
    entries: HashMap<TabletAlias, Entry>,
    /// Regular polls by due time.
    due: BTreeSet<(Instant, TabletAlias)>,
    /// Tablets to poll before anything else, in request order.
    urgent: VecDeque<TabletAlias>,
    /// In-flight polls not yet marked slow, by start time (for marking).
    active: BTreeSet<(Instant, TabletAlias)>,
    /// Slow polls still in flight, by next re-mark time: a hung poll is
    /// reported as still running every `slow_after`, so the hung check's
    /// time keeps advancing until the poll ends.
    hung: BTreeSet<(Instant, TabletAlias)>,
}

impl PollSchedule {
    /// An empty schedule.
    pub fn new(config: ScheduleConfig) -> Self {
        PollSchedule {
            config,
            entries: HashMap::new(),
            due: BTreeSet::new(),
            urgent: VecDeque::new(),
            active: BTreeSet::new(),
            hung: BTreeSet::new(),
        }
    }

    /// Settings.
    pub fn config(&self) -> &ScheduleConfig {
        &self.config
    }

    /// Changes the poll interval (dynamic `--instance-poll-time`); polls
    /// already scheduled keep their time, the next ones use the new interval.
    pub fn set_poll_interval(&mut self, interval: Duration) {
        self.config.poll_interval = interval;
    }

    /// Number of scheduled tablets.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no tablet is scheduled.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `alias` is scheduled.
    pub fn contains(&self, alias: &TabletAlias) -> bool {
        self.entries.contains_key(alias)
    }

    /// Number of polls holding a worker.
    pub fn active(&self) -> usize {
        self.active.len()
    }

    /// Number of polls in flight (active and slow).
    pub fn in_flight(&self) -> usize {
        self.entries.values().filter(|e| e.started.is_some()).count()
    }

    /// Whether a poll of `alias` is in flight.
    pub fn is_in_flight(&self, alias: &TabletAlias) -> bool {
        self.entries.get(alias).is_some_and(|e| e.started.is_some())
    }

    /// Schedules a new tablet for an immediate poll; a known one is left alone.
    pub fn add(&mut self, alias: &TabletAlias) {
        if self.entries.contains_key(alias) {
            return;
        }
        self.entries.insert(
            alias.clone(),
            Entry {
                due: None,
                started: None,
                slow_mark: None,
                again: false,
                urgent: true,
                failures: 0,
                polled_once: false,
            },
        );
        self.urgent.push_back(alias.clone());
    }

    /// Forgets a tablet. A poll in flight for it frees its worker now; its
    /// result should be ignored ([`PollSchedule::finished`] returns false).
    pub fn remove(&mut self, alias: &TabletAlias) {
        let Some(entry) = self.entries.remove(alias) else {
            return;
        };
        if let Some(due) = entry.due {
            self.due.remove(&(due, alias.clone()));
        }
        if let Some(started) = entry.started {
            match entry.slow_mark {
                Some(mark) => self.hung.remove(&(mark, alias.clone())),
                None => self.active.remove(&(started, alias.clone())),
            };
        }
        if entry.urgent {
            self.urgent.retain(|a| a != alias);
        }
    }

    /// Asks for a poll of `alias` as soon as possible (after the one in
    /// flight, if any). Returns false for an unknown tablet.
    pub fn poll_now(&mut self, alias: &TabletAlias) -> bool {
        let Some(entry) = self.entries.get_mut(alias) else {
            return false;
        };
        if entry.started.is_some() {
            entry.again = true;
        } else if !entry.urgent {
            if let Some(due) = entry.due.take() {
                self.due.remove(&(due, alias.clone()));
            }
            entry.urgent = true;
            self.urgent.push_back(alias.clone());
        }
        true
    }

    /// The earliest time something becomes due: a regular poll, an active
    /// poll turning slow, or a slow poll to re-mark. `None` when only urgent
    /// work or nothing is pending (urgent work is taken by
    /// [`PollSchedule::start_ready`] right away).
    pub fn next_wakeup(&self) -> Option<Instant> {
        let due = self.due.first().map(|(t, _)| *t);
        let slow = self.active.first().map(|(t, _)| *t + self.config.slow_after);
        let hung = self.hung.first().map(|(t, _)| *t);
        [due, slow, hung].into_iter().flatten().min()
    }

    /// Marks active polls that started `slow_after` ago or earlier as slow,
    /// freeing their workers, and re-marks slow polls still running every
    /// `slow_after`. Returns `(tablet, newly slow)` for each; the caller
    /// records the hung attempt at `now` (VTOrc's `last_attempted_check`).
    pub fn mark_slow(&mut self, now: Instant) -> Vec<(TabletAlias, bool)> {
        let mut marked = Vec::new();
        let slow_after = self.config.slow_after;
        let next = now + slow_after;
        while let Some(alias) = pop_first_if(&mut self.active, |started| started + slow_after <= now) {
            self.mark_hung(&alias, next);
            marked.push((alias, true));
        }
        while let Some(alias) = pop_first_if(&mut self.hung, |mark| mark <= now) {
            self.mark_hung(&alias, next);
            marked.push((alias, false));
        }
        marked
    }

    /// Records `alias`'s poll as hung, to be re-marked slow at `next` (if
    /// the tablet is still scheduled).
    fn mark_hung(&mut self, alias: &TabletAlias, next: Instant) {
        if let Some(entry) = self.entries.get_mut(alias) {
            entry.slow_mark = Some(next);
            self.hung.insert((next, alias.clone()));
        }
    }

    /// Starts as many polls as workers allow: urgent ones first, then due
    /// ones in due order. Returns the tablets to poll now; each is in flight
    /// until [`PollSchedule::finished`].
    pub fn start_ready(&mut self, now: Instant) -> Vec<TabletAlias> {
        let mut started = Vec::new();
        while self.active.len() < self.config.workers.max(1) {
            let alias = if let Some(alias) = self.urgent.pop_front() {
                alias
            } else if let Some((due, _)) = self.due.first()
                && *due <= now
            {
                let Some((_, alias)) = self.due.pop_first() else {
                    break;
                };
                alias
            } else {
                break;
            };
            let Some(entry) = self.entries.get_mut(&alias) else {
                continue;
            };
            entry.urgent = false;
            entry.due = None;
            entry.started = Some(now);
            entry.slow_mark = None;
            self.active.insert((now, alias.clone()));
            started.push(alias);
        }
        started
    }

    /// Records the end of `alias`'s poll and schedules the next one.
    /// Returns false if the tablet is no longer scheduled or no poll was in
    /// flight (the result is stale and should be dropped).
    pub fn finished(&mut self, alias: &TabletAlias, end: PollEnd, rng: &mut impl Rng) -> bool {
        let Some(entry) = self.entries.get_mut(alias) else {
            return false;
        };
        let Some(started) = entry.started.take() else {
            return false;
        };
        match entry.slow_mark.take() {
            Some(mark) => self.hung.remove(&(mark, alias.clone())),
            None => self.active.remove(&(started, alias.clone())),
        };
        let first = !entry.polled_once;
        entry.polled_once = true;
        entry.failures = match end {
            PollEnd::Answered => 0,
            PollEnd::Unreachable => entry.failures.saturating_add(1),
        };
        if std::mem::take(&mut entry.again) {
            entry.urgent = true;
            self.urgent.push_back(alias.clone());
            return true;
        }
        let interval = self.config.poll_interval;
        let delay = if entry.failures > 0 {
            let factor = 1u32
                .checked_shl(entry.failures - 1)
                .unwrap_or(u32::MAX)
                .min(self.config.max_backoff_factor.max(1));
            interval * factor
        } else if first {
            // Spread tablets discovered together over one interval.
            interval.mul_f64(rng.random_range(0.0..=1.0))
        } else {
            let jitter = self.config.jitter.clamp(0.0, 1.0);
            interval.mul_f64(1.0 - rng.random_range(0.0..=jitter))
        };
        let due = started + delay;
        entry.due = Some(due);
        self.due.insert((due, alias.clone()));
        true
    }
}

/// Removes and returns the earliest tablet of `set` when `due` holds for
/// its instant.
fn pop_first_if(
    set: &mut BTreeSet<(Instant, TabletAlias)>,
    due: impl Fn(Instant) -> bool,
) -> Option<TabletAlias> {
    let (at, _) = set.first()?;
    if !due(*at) {
        return None;
    }
    set.pop_first().map(|(_, alias)| alias)
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;

    fn alias(uid: u32) -> TabletAlias {
        TabletAlias::new("zone1", uid)
    }

    /// A schedule with `workers` workers (1 s interval and slow mark, no
    /// jitter) and tablets 1 to `tablets` added, in that order.
    fn schedule(workers: usize, tablets: u32) -> PollSchedule {
        let mut s = PollSchedule::new(ScheduleConfig {
            poll_interval: Duration::from_secs(1),
            workers,
            slow_after: Duration::from_secs(1),
            max_backoff_factor: 4,
            jitter: 0.0,
        });
        for uid in 1..=tablets {
            s.add(&alias(uid));
        }
        s
    }

    /// [`schedule`] of one tablet whose first poll started at `now`.
    fn polling_one(now: Instant) -> PollSchedule {
        let mut s = schedule(10, 1);
        assert_eq!(s.start_ready(now), vec![alias(1)]);
        s
    }

    #[test]
    fn new_tablets_are_polled_at_once_within_the_worker_limit() {
        let mut s = schedule(2, 3);
        let now = crate::clock::now();
        assert_eq!(s.start_ready(now), vec![alias(1), alias(2)]);
        assert!(s.start_ready(now).is_empty(), "both workers busy");
        let mut rng = StdRng::seed_from_u64(1);
        assert!(s.finished(&alias(1), PollEnd::Answered, &mut rng));
        assert_eq!(s.start_ready(now), vec![alias(3)]);
    }

    #[test]
    fn an_answered_tablet_is_polled_again_one_interval_after_its_previous_start() {
        let t0 = crate::clock::now();
        let mut s = polling_one(t0);
        let mut rng = StdRng::seed_from_u64(1);
        s.finished(&alias(1), PollEnd::Answered, &mut rng); // first: spread in [0, 1s]
        let first_due = s.next_wakeup().expect("scheduled");
        assert!(first_due <= t0 + Duration::from_secs(1));
        assert_eq!(s.start_ready(first_due), vec![alias(1)]);
        s.finished(&alias(1), PollEnd::Answered, &mut rng);
        assert_eq!(s.next_wakeup(), Some(first_due + Duration::from_secs(1)));
        assert!(s.start_ready(first_due + Duration::from_millis(999)).is_empty());
    }

    #[test]
    fn unreachable_tablets_back_off_up_to_the_cap_and_recover_at_once() {
        let mut s = schedule(10, 1);
        let mut rng = StdRng::seed_from_u64(1);
        let mut now = crate::clock::now();
        let mut gaps = Vec::new();
        for _ in 0..5 {
            assert_eq!(s.start_ready(now), vec![alias(1)]);
            s.finished(&alias(1), PollEnd::Unreachable, &mut rng);
            let next = s.next_wakeup().expect("scheduled");
            gaps.push((next - now).as_secs());
            now = next;
        }
        assert_eq!(gaps, [1, 2, 4, 4, 4]);
        // The health stream says the tablet is back: poll now, not in 4 s.
        assert!(s.poll_now(&alias(1)));
        assert_eq!(s.start_ready(now), vec![alias(1)]);
        s.finished(&alias(1), PollEnd::Answered, &mut rng);
        assert_eq!(s.next_wakeup(), Some(now + Duration::from_secs(1)));
    }

    #[test]
    fn a_trigger_during_a_poll_queues_exactly_one_more_poll_after_it() {
        let now = crate::clock::now();
        let mut s = polling_one(now);
        let mut rng = StdRng::seed_from_u64(1);
        assert!(s.poll_now(&alias(1)));
        assert!(s.poll_now(&alias(1)));
        assert!(s.start_ready(now).is_empty(), "one poll per tablet in flight");
        s.finished(&alias(1), PollEnd::Answered, &mut rng);
        assert_eq!(s.start_ready(now), vec![alias(1)]);
        s.finished(&alias(1), PollEnd::Answered, &mut rng);
        assert!(s.start_ready(now).is_empty());
    }

    #[test]
    fn hung_polls_stop_holding_workers_after_slow_after() {
        let mut s = schedule(2, 4);
        let t0 = crate::clock::now();
        assert_eq!(s.start_ready(t0), vec![alias(1), alias(2)]);
        assert_eq!(s.next_wakeup(), Some(t0 + Duration::from_secs(1)));
        assert!(s.mark_slow(t0 + Duration::from_millis(999)).is_empty());
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(s.mark_slow(t1), vec![(alias(1), true), (alias(2), true)]);
        assert_eq!(s.active(), 0);
        assert_eq!(s.in_flight(), 2);
        assert_eq!(s.start_ready(t1), vec![alias(3), alias(4)]);
        // A slow poll that ends does not free a worker twice.
        let mut rng = StdRng::seed_from_u64(1);
        assert!(s.finished(&alias(1), PollEnd::Unreachable, &mut rng));
        assert_eq!(s.active(), 2);
        // Still hung a second later: re-marked (and 3, 4 turn slow).
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(
            s.mark_slow(t2),
            vec![(alias(3), true), (alias(4), true), (alias(2), false)]
        );
        s.remove(&alias(2));
        assert!(s.finished(&alias(3), PollEnd::Answered, &mut rng));
        assert_eq!(s.mark_slow(t2 + Duration::from_secs(1)), vec![(alias(4), false)]);
    }

    #[test]
    fn removed_tablets_free_their_worker_and_their_results_are_stale() {
        let mut s = schedule(1, 2);
        let now = crate::clock::now();
        assert_eq!(s.start_ready(now), vec![alias(1)]);
        s.remove(&alias(1));
        assert_eq!(s.start_ready(now), vec![alias(2)]);
        let mut rng = StdRng::seed_from_u64(1);
        assert!(!s.finished(&alias(1), PollEnd::Answered, &mut rng));
        assert!(!s.poll_now(&alias(1)));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn jitter_only_ever_makes_polls_early() {
        let mut s = PollSchedule::new(ScheduleConfig {
            poll_interval: Duration::from_secs(1),
            workers: 10,
            slow_after: Duration::from_secs(1),
            max_backoff_factor: 4,
            jitter: 0.1,
        });
        let mut rng = StdRng::seed_from_u64(3);
        let mut now = crate::clock::now();
        s.add(&alias(1));
        s.start_ready(now);
        s.finished(&alias(1), PollEnd::Answered, &mut rng);
        for _ in 0..50 {
            now = s.next_wakeup().expect("scheduled");
            let start = now;
            assert_eq!(s.start_ready(now), vec![alias(1)]);
            s.finished(&alias(1), PollEnd::Answered, &mut rng);
            let gap = s.next_wakeup().expect("scheduled") - start;
            assert!(
                gap <= Duration::from_secs(1) && gap >= Duration::from_millis(900),
                "{gap:?}"
            );
        }
    }
}
