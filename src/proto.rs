//! The generated `mlcp.v1` protocol (messages and tonic services). This is the only module
//! that includes generated code. (Filled in by the proto/manifest work.)
