//! Compiled schedules: daily wall-clock times in a time zone, and the pure
//! computation of which slots are due given when the schedule last fired.
//! The runtime asks; nothing here reads a clock.

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Slots missed while down are skipped.
    None,
    /// Slots missed while down run once, on start-up (R4.1).
    Once,
    /// Every missed slot runs.
    All,
}

#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    pub name: String,
    pub workflow: String,
    pub tz: Tz,
    /// Sorted, distinct.
    pub times: Vec<NaiveTime>,
    pub catch_up: CatchUp,
    pub input: Value,
}

/// A slot counts as on time (not missed) if handled within this delay.
pub const ON_TIME_GRACE: Duration = Duration::minutes(2);
/// At most this many missed slots are returned for `CatchUp::All`.
pub const MAX_CATCH_UP: usize = 1000;

impl ScheduleSpec {
    /// The first slot strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> DateTime<Utc> {
        let mut day = after.with_timezone(&self.tz).date_naive();
        loop {
            for t in &self.times {
                if let Some(local) = self.tz.from_local_datetime(&day.and_time(*t)).earliest() {
                    let utc = local.with_timezone(&Utc);
                    if utc > after {
                        return utc;
                    }
                }
            }
            day = day.succ_opt().expect("date in range");
        }
    }

    /// Slots in `(from, to]`, oldest first, at most `limit`.
    pub fn slots_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = from;
        while out.len() < limit {
            let n = self.next_after(t);
            if n > to {
                break;
            }
            out.push(n);
            t = n;
        }
        out
    }

    /// The slots to run now. `last` is the latest slot already handled
    /// (None on the very first start: only an on-time slot runs then).
    pub fn due(&self, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let from = last.unwrap_or(now - ON_TIME_GRACE);
        let limit = if self.catch_up == CatchUp::All {
            MAX_CATCH_UP
        } else {
            usize::MAX
        };
        let slots = if self.catch_up == CatchUp::All {
            self.slots_between(from, now, limit)
        } else {
            // Only the newest slot matters; find it without walking a long downtime.
            let newest = self.latest_at_or_before(now);
            newest.filter(|s| *s > from).into_iter().collect()
        };
        match self.catch_up {
            CatchUp::All | CatchUp::Once => slots,
            CatchUp::None => slots
                .into_iter()
                .filter(|s| now - *s <= ON_TIME_GRACE)
                .collect(),
        }
    }

    /// The newest slot at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Slots are at least daily; start two days back and walk forward.
        let mut s = self.next_after(t - Duration::days(2));
        let mut best = None;
        while s <= t {
            best = Some(s);
            s = self.next_after(s);
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(catch_up: CatchUp) -> ScheduleSpec {
        ScheduleSpec {
            name: "comparison".into(),
            workflow: "comparison".into(),
            tz: chrono_tz::Asia::Shanghai,
            times: ["05:00", "10:00", "15:00"]
                .iter()
                .map(|s| NaiveTime::parse_from_str(s, "%H:%M").unwrap())
                .collect(),
            catch_up,
            input: Value::Null,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn next_slot_is_in_shanghai_time() {
        let s = sched(CatchUp::Once);
        assert_eq!(
            s.next_after(at("2026-12-01T04:59:00+08:00")),
            at("2026-12-01T05:00:00+08:00")
        );
        assert_eq!(
            s.next_after(at("2026-12-01T05:00:00+08:00")),
            at("2026-12-01T10:00:00+08:00")
        );
        assert_eq!(
            s.next_after(at("2026-12-01T15:00:00+08:00")),
            at("2026-12-02T05:00:00+08:00")
        );
    }

    #[test]
    fn downtime_over_two_slots_catches_up_once() {
        let s = sched(CatchUp::Once);
        let last = Some(at("2026-12-01T05:00:00+08:00"));
        let due = s.due(last, at("2026-12-01T16:30:00+08:00"));
        assert_eq!(due, vec![at("2026-12-01T15:00:00+08:00")]);
        assert_eq!(
            sched(CatchUp::All)
                .due(last, at("2026-12-01T16:30:00+08:00"))
                .len(),
            2
        );
        assert!(sched(CatchUp::None)
            .due(last, at("2026-12-01T16:30:00+08:00"))
            .is_empty());
        assert_eq!(
            sched(CatchUp::None)
                .due(last, at("2026-12-01T15:01:00+08:00"))
                .len(),
            1
        );
    }

    #[test]
    fn nothing_due_twice_and_first_start_runs_no_history() {
        let s = sched(CatchUp::Once);
        let slot = at("2026-12-01T10:00:00+08:00");
        assert!(s
            .due(Some(slot), at("2026-12-01T10:00:30+08:00"))
            .is_empty());
        assert!(s.due(None, at("2026-12-01T12:00:00+08:00")).is_empty());
        assert_eq!(s.due(None, at("2026-12-01T10:00:30+08:00")), vec![slot]);
    }
}
