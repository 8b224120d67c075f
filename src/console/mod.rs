//! What the command-line programs (the CLI and the tools) share to talk to a person:
//! pipe-safe stdout ([`out`]), tables ([`table`]), names of proto enums ([`names`]), the
//! cluster status text ([`status`]), flag values ([`flags`]) and Ctrl-C ([`signals`]).

// Output to stdout goes through `out::write` (the `out!`/`outln!` macros), which ends the
// process quietly when the reader closed the pipe; `println!` would panic instead.
#![deny(clippy::print_stdout)]

pub mod flags;
pub mod names;
pub mod out;
pub mod signals;
pub mod status;
pub mod table;
