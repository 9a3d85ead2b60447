//! Integration tests for Tidelog.
