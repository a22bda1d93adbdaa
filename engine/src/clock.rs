//! Where time comes from: the system clock in production, a manual clock in
//! tests and rehearsals. Nothing else in the engine reads the time.

use chrono::{DateTime, Utc};
use std::sync::Mutex;

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock {
            now: Mutex::new(start),
        }
    }
    pub fn set(&self, t: DateTime<Utc>) {
        *self.now.lock().expect("clock lock") = t;
    }
    pub fn advance(&self, d: std::time::Duration) -> DateTime<Utc> {
        let mut now = self.now.lock().expect("clock lock");
        *now += chrono::Duration::from_std(d).expect("duration in range");
        *now
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().expect("clock lock")
    }
}

/// A clock an operator can move forward: the manual clock of tests and the
/// rehearsal clock of a demo.
pub trait AdjustableClock: Clock {
    /// Move forward by `d`; returns the new time.
    fn advance_by(&self, d: std::time::Duration) -> DateTime<Utc>;
}

impl AdjustableClock for ManualClock {
    fn advance_by(&self, d: std::time::Duration) -> DateTime<Utc> {
        self.advance(d)
    }
}

/// Rehearsal time: starts at a chosen instant and runs with the wall clock
/// from there; an operator can jump it forward (never back, so timers and
/// histories stay in order).
#[derive(Debug)]
pub struct RehearsalClock {
    offset: Mutex<chrono::Duration>,
}

impl RehearsalClock {
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        RehearsalClock {
            offset: Mutex::new(start - Utc::now()),
        }
    }
}

impl Clock for RehearsalClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.offset.lock().expect("clock lock")
    }
}

impl AdjustableClock for RehearsalClock {
    fn advance_by(&self, d: std::time::Duration) -> DateTime<Utc> {
        let mut offset = self.offset.lock().expect("clock lock");
        *offset += chrono::Duration::from_std(d).expect("duration in range");
        Utc::now() + *offset
    }
}
