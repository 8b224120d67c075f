//! Everything the CLI prints on stdout goes through [`write`] (the [`out!`] and [`outln!`]
//! macros), so that a reader that left early (`mlcp task list | head -1`) ends the process
//! the way it ends other Unix tools instead of panicking in `println!`.
//!
//! Rust ignores SIGPIPE so that a write to a closed socket is an EPIPE error; the gRPC
//! client depends on that (a controller killed mid-request must be an error to fail over
//! from, not the end of the CLI). So SIGPIPE keeps being ignored, and only a closed
//! *stdout* restores its default action and raises it: the process dies of SIGPIPE, which
//! a shell reports as status 141, with nothing on stderr.

use std::fmt;
use std::io::{self, Write};

/// Writes `args` to stdout and flushes. A reader that closed the pipe ends the process
/// quietly, as SIGPIPE ends `cat`; any other write error ends it with status 1 and one line
/// on stderr (as `println!` would have panicked).
pub fn write(args: fmt::Arguments<'_>) {
    let result = {
        let mut stdout = io::stdout().lock();
        stdout.write_fmt(args).and_then(|()| stdout.flush())
    };
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => reader_gone(),
        Err(e) => {
            eprintln!("error: writing to stdout: {e}");
            std::process::exit(1);
        }
    }
}

/// Ends the process as the default action of SIGPIPE would have.
fn reader_gone() -> ! {
    #[cfg(unix)]
    {
        use nix::sys::signal::{SigHandler, Signal, raise, signal};
        // SAFETY: installing the default action runs no handler code of ours.
        let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
        let _ = raise(Signal::SIGPIPE);
    }
    // Not reached on unix; elsewhere the shell's code for "killed by SIGPIPE".
    std::process::exit(141)
}

/// `print!` to stdout through [`write`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::console::out::write(format_args!($($arg)*))
    };
}

/// `println!` to stdout through [`write`].
macro_rules! outln {
    () => {
        $crate::console::out::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::console::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};
