//! The web server and the binary of the Chengdu epidemic-prevention module.
//! The application layer lives in the `application` crate (domain values in
//! `domain`); its modules are re-exported here under their names, so
//! `crate::accounts` in a handler and `server::accounts` in a test name the
//! same module as before the split.
pub use application::{
    accounts, activities, adapters, admin, api_tokens, audit, backend, backtest, comparison,
    config, console, db, demo, domain, explain, instances, metrics, ops, records, retention,
    rule_cases, secret, services, sites, staff, system, warnings,
};
pub mod policy_cli;
pub mod web;
