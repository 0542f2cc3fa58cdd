//! The `ckpt` command line. One file per subcommand under `commands/`.

/// Entry point of the `ckpt` binary; returns the process exit code.
pub fn main() -> i32 {
    eprintln!("ckpt: not yet implemented");
    2
}
