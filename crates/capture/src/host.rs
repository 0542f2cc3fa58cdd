//! The machine the dump is taken on.

use ckpt_image::{Arch, CpuInfo, HostInfo};

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Host facts; missing /proc files leave fields empty rather than failing.
pub(crate) fn host_info() -> HostInfo {
    let (xcr0, xsave_size) = ckpt_sys::sys::xsave_info();
    let mut cpu = CpuInfo {
        xcr0,
        xsave_size,
        ..Default::default()
    };
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    // The first processor's block.
    for line in cpuinfo.lines() {
        if line.trim().is_empty() {
            break;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "vendor_id" => cpu.vendor = v.to_string(),
            "model name" => cpu.model_name = v.to_string(),
            "cpu family" => cpu.family = v.parse().unwrap_or(0),
            "model" => cpu.model = v.parse().unwrap_or(0),
            "stepping" => cpu.stepping = v.parse().unwrap_or(0),
            "flags" => cpu.flags = v.split_whitespace().map(str::to_string).collect(),
            _ => {}
        }
    }
    HostInfo {
        hostname: read_trim("/proc/sys/kernel/hostname"),
        kernel_release: read_trim("/proc/sys/kernel/osrelease"),
        arch: if cfg!(target_arch = "x86_64") {
            Arch::X8664
        } else if cfg!(target_arch = "aarch64") {
            Arch::Aarch64
        } else {
            Arch::Unknown
        },
        page_size: ckpt_sys::query::page_size(),
        cpu,
        boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
    }
}
