//! The Temporal backend of the conformance suite (WIP: waits for the
//! engine-temporal client and worker API).

use super::{Backend, Fakes};
use engine::{Actor, Bundle, Instance};
use serde_json::Value;
use std::time::Duration;

/// `TEMPORAL_ADDRESS`, or None (said on stderr) when it is not set —
/// unless `EPI_TEMPORAL_TESTS=1`, where a missing server fails the test.
pub fn address(what: &str) -> Option<String> {
    match std::env::var("TEMPORAL_ADDRESS") {
        Ok(a) if !a.is_empty() => Some(a),
        _ if std::env::var("EPI_TEMPORAL_TESTS").as_deref() == Ok("1") => panic!(
            "EPI_TEMPORAL_TESTS=1 but TEMPORAL_ADDRESS is not set: the Temporal half of {what} cannot run (eval \"$(scripts/temporal.sh start)\")"
        ),
        _ => {
            eprintln!("TEMPORAL_ADDRESS not set: the Temporal half of {what} skipped");
            None
        }
    }
}

pub struct OnTemporal {
    fakes: Fakes,
}

impl OnTemporal {
    pub async fn connect(_bundle: Bundle, _fakes: Fakes, prefix: &str) -> Option<Self> {
        let _ = address(prefix)?;
        None
    }
    pub async fn shutdown(self) {}
}

impl Backend for OnTemporal {
    fn name(&self) -> &'static str {
        "temporal"
    }
    fn fakes(&self) -> &Fakes {
        &self.fakes
    }
    fn patience(&self) -> Duration {
        Duration::from_secs(30)
    }
    async fn start(&self, _workflow: &str, _id: &str, _input: Value) {}
    async fn signal(&self, _id: &str, _name: &str, _payload: Value, _actor: Actor) {}
    async fn advance_to(&self, _t: Duration) {}
    async fn instance(&self, _id: &str) -> Option<Instance> {
        None
    }
    async fn settle(&self) {}
    async fn kill_worker(&self) {}
    async fn start_worker(&self) {}
    async fn publish(&self, _bundle: Bundle) {}
}
