//! placeholder
pub mod activity;
