//! Placeholder: filled in by the discovery/membership work.
