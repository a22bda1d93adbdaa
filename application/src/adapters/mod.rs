//! Adapters to the outside services of DOMAIN.md: the health commission
//! (HTTP client and simulator) and the SMS gateway (HTTP client and the
//! embedded default's log). Each is a trait so callers do not care which.

pub mod health;
pub mod health_sim;
pub mod sms;

pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;
