//! Sets of address ranges `[start, end)` as sorted, disjoint lists.

/// Sorted, merged (overlapping or touching ranges joined), empty ones gone.
pub(crate) fn norm(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.retain(|r| r.0 < r.1);
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(l) if a <= l.1 => l.1 = l.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// `a` minus `b` (both normalized).
pub(crate) fn minus(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut j = 0usize;
    for &(s, e) in a {
        let mut at = s;
        while j < b.len() && b[j].1 <= at {
            j += 1;
        }
        let mut k = j;
        while k < b.len() && b[k].0 < e {
            if b[k].0 > at {
                out.push((at, b[k].0));
            }
            at = at.max(b[k].1);
            k += 1;
        }
        if at < e {
            out.push((at, e));
        }
    }
    out
}

/// `a` intersected with `b` (both normalized).
pub(crate) fn inter(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0usize, 0usize);
    while i < a.len() && j < b.len() {
        let (s, e) = (a[i].0.max(b[j].0), a[i].1.min(b[j].1));
        if s < e {
            out.push((s, e));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Consecutive pages (addresses, sorted) as ranges.
pub(crate) fn of_pages(pages: impl IntoIterator<Item = u64>, page: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for p in pages {
        match out.last_mut() {
            Some(l) if l.1 == p => l.1 += page,
            _ => out.push((p, p + page)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations() {
        let a = norm(vec![(10, 20), (0, 5), (4, 8), (30, 40), (20, 22)]);
        assert_eq!(a, vec![(0, 8), (10, 22), (30, 40)]);
        let b = norm(vec![(2, 3), (15, 35)]);
        assert_eq!(minus(&a, &b), vec![(0, 2), (3, 8), (10, 15), (35, 40)]);
        assert_eq!(inter(&a, &b), vec![(2, 3), (15, 22), (30, 35)]);
        assert_eq!(minus(&a, &[]), a);
        assert!(inter(&a, &[]).is_empty());
        assert_eq!(of_pages([0, 4, 8, 16], 4), vec![(0, 12), (16, 20)]);
    }
}
