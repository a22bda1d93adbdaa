//! Workflow engine (placeholder, being built).
