//! The application layer of the Chengdu epidemic-prevention module on the
//! engine: configuration, the database and its migrations, accounts,
//! adapters to outside services, services, the comparison, activities,
//! warnings. No web: the `server` crate holds the forms and the binary and
//! reaches these modules through its re-exports (`server::accounts`, …).
pub use ::domain;
pub mod accounts;
pub mod activities;
pub mod adapters;
pub mod admin;
pub mod api_tokens;
pub mod audit;
pub mod backend;
pub mod backtest;
pub mod comparison;
pub mod config;
pub mod console;
pub mod db;
pub mod demo;
pub mod explain;
pub mod instances;
pub mod metrics;
pub mod ops;
pub mod records;
pub mod retention;
pub mod rule_cases;
pub mod secret;
pub mod services;
pub mod sites;
pub mod staff;
pub mod system;
pub mod warnings;
