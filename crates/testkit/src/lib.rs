//! What the ckpt tests share; a dev-dependency only, never part of a
//! program.
//!
//! - [`TempDir`]: a fresh directory (via `tempfile`), removed on drop.
//! - [`fixture`], [`compile_c`]: the C fixtures of tests/fixtures, built
//!   into `FIXTURE_DIR`, and small C programs given as source.
//! - [`Proc`]: a process under test with its output in a file; its waits
//!   fail at once, with the output, when the process prints an `ERROR`
//!   line or exits, instead of timing out vaguely.
//! - [`require!`] and [`need`]: one skip policy for missing privileges and
//!   tools: under `CI=true` (or `CKPT_TEST_STRICT=1`) a missing one fails
//!   the test; elsewhere the test may skip, with a loud message.
//! - [`scenarios`]: the fixtures dumped and restored, with what each must
//!   show after, run through the binary (e2e) or the libraries (restore).
//! - [`run_timeout`], [`assert_clean_failure`]: run a command under a
//!   deadline; check that a failure is a clean one.
//! - [`tmux`]: a private tmux server driven with send-keys and
//!   capture-pane, for the terminal tests.
//! - [`ptys`]: a lock that keeps the pty index a dump freed from being
//!   taken by another test before the restore.
#![forbid(unsafe_code)]

pub mod checks;
mod cmd;
mod feed;
mod fixtures;
mod proc;
pub mod ptys;
pub mod require;
pub mod scenarios;
mod temp;
mod text;
pub mod tmux;

pub use cmd::{assert_clean_failure, run_timeout, spawn_piped, stderr_of, stdout_of, Piped};
pub use feed::LineFeed;
pub use fixtures::{compile_c, compile_c_in, fixture, fixture_dir, repo_root, target_dir};
pub use proc::{
    assert_free, become_subreaper, files_starting, is_zombie, proc_state, signal, status_field,
    try_reap, wait_exit, wait_gone, wait_until, Proc, TIMEOUT,
};
pub use require::{need, Missing};
pub use temp::TempDir;
pub use text::{assert_steps, field, hex_field, tail, values};
