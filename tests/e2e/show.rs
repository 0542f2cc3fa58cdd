//! `ckpt show` on real and broken images.

use crate::util::*;

#[test]
fn show_text_and_json_of_a_real_dump() {
    let dir = TempDir::new("show");
    let p = Proc::spawn(&dir, fixture("counter"), &["0", "10"]);
    p.wait_line(|l| l.starts_with("READY"));
    let image = dir.join("img.ckpt");
    dump_leave_running(p.pid, &image);
    let text = ckpt_ok(&["show", image.to_str().unwrap()]);
    assert!(text.contains(&p.pid.to_string()), "{text}");
    assert!(text.contains("counter"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&ckpt_ok(&["show", "--json", image.to_str().unwrap()])).unwrap();
    assert_eq!(json["rootPid"], p.pid);
    assert_eq!(json["processes"][0]["pid"], p.pid);
}

#[test]
fn broken_images_are_rejected_with_a_reason() {
    let dir = TempDir::new("broken");
    let p = Proc::spawn(&dir, fixture("counter"), &["0", "10"]);
    p.wait_line(|l| l.starts_with("READY"));
    let image = dir.join("img.ckpt");
    dump_leave_running(p.pid, &image);
    let good = std::fs::read(&image).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("magic", {
            let mut b = good.clone();
            b[0] ^= 0xff;
            b
        }),
        (
            "garbage",
            (0..5000u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
        ),
        ("flipped", {
            let mut b = good.clone();
            let n = b.len();
            b[n - 100] ^= 0x10;
            b
        }),
    ];
    for (name, bytes) in cases {
        let f = dir.join(format!("{name}.ckpt"));
        std::fs::write(&f, bytes).unwrap();
        for args in [
            vec!["show"],
            vec!["show", "--json"],
            vec!["restore", "--check"],
        ] {
            let mut a = args.clone();
            a.push(f.to_str().unwrap());
            let o = ckpt_run(&a);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{name}: {a:?} succeeded");
            assert!(err.contains("ckpt: error:"), "{name}: {a:?}: {err}");
            assert!(!err.contains("panicked"), "{name}: {a:?} panicked: {err}");
        }
    }
}
