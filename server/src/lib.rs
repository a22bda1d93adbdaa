//! The application crate: the Chengdu epidemic-prevention module on the
//! engine. Domain data and its database, adapters to outside services,
//! configuration.
pub mod accounts;
pub mod activities;
pub mod adapters;
pub mod admin;
pub mod audit;
pub mod backtest;
pub mod comparison;
pub mod config;
pub mod console;
pub mod db;
pub mod demo;
pub use ::domain;
pub mod explain;
pub mod metrics;
pub mod policy_cli;
pub mod records;
pub mod retention;
pub mod rule_cases;
pub mod secret;
pub mod services;
pub mod sites;
pub mod staff;
pub mod system;
pub mod warnings;
pub mod web;
