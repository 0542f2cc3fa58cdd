//! Safe wrappers for restore-side setup that needs `unsafe`.
