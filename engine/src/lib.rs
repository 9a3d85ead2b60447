//! Tidelog engine.
