//! Safe wrappers for capture-side queries that need `unsafe` (ioctls, prlimit, ...).
