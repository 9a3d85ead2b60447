//! Tidelog wire formats.
