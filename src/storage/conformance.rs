//! Conformance suite (filled in next).
