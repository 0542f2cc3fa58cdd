//! Small libc calls the ckptfs daemon needs that neither std nor nix wraps.

/// A broken-down local time (what `localtime_r(3)` gives).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i32,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// `secs` seconds since the epoch in the local time zone (TZ, /etc/localtime);
/// None when the C library cannot convert it.
pub fn local_time(secs: i64) -> Option<LocalTime> {
    let t: libc::time_t = secs;
    // SAFETY: libc::tm is a plain C struct of integers and a pointer, for
    // which all zeros is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers point to live, properly aligned values that
    // outlive the call; localtime_r is thread-safe.
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    if r.is_null() {
        return None;
    }
    Some(LocalTime {
        year: tm.tm_year + 1900,
        month: (tm.tm_mon + 1) as u32,
        day: tm.tm_mday as u32,
        hour: tm.tm_hour as u32,
        minute: tm.tm_min as u32,
        second: tm.tm_sec as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_time_is_sane() {
        let t = local_time(1_700_000_000).unwrap();
        assert_eq!(t.year, 2023);
        assert_eq!(t.month, 11);
        assert!((14..=15).contains(&t.day), "{t:?}");
        assert!(t.hour < 24 && t.minute < 60 && t.second < 60);
    }
}
