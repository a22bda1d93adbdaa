//! `engine`: a domain-agnostic durable workflow and rules engine.
//!
//! Workflows are YAML definitions (`definition`), compiled and checked into
//! `Program`s (`compile`), with rules and expressions in sandboxed rhai
//! (`rules`), run by a pure step function (`interpreter`). `testing` (feature
//! `testing`, for tests) drives the interpreter in memory with a manual
//! clock. The dependency direction
//! is definition -> compile -> interpreter -> runtime -> store; `rules`
//! serves compile and interpreter.

pub mod clock;
pub mod compile;
pub mod definition;
pub mod inspect;
pub mod interpreter;
pub mod rules;
pub mod runtime;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use compile::program::{Program, RetryPolicy};
pub use compile::{compile_bundle, compile_program, load_dirs, Bundle, Diagnostic, Options};
pub use interpreter::{step, Actor, Effect, Input, Instance, Transition};
