//! Old home of the calls on another process's memory.
//! Shim kept while callers migrate: it goes once they use the new paths.

/// Moved to [`crate::mm`]; shim kept while callers migrate.
pub use crate::mm::{read_vm, write_vm, ProcMem, RemoteRange};
