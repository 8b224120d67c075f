//! (stub: filled in by the scheduler work)
