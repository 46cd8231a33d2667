//! Standard output that a closed pipe ends quietly (`entente status | head -1`): the command
//! stops as other Unix tools do when their reader went away, with status 141 (128 + SIGPIPE),
//! instead of panicking.

use std::io::Write;

/// Writes `args` to standard output; a closed pipe ends the process quietly.
pub fn write(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        panic!("writing to standard output: {e}");
    }
}

/// `println!` whose output may go to a closed pipe.
macro_rules! outln {
    () => { $crate::out::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::out::write(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` whose output may go to a closed pipe.
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::write(format_args!($($arg)*)) };
}
