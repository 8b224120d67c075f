//! (stub: filled in by the manifest work)
