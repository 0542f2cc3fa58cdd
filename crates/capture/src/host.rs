//! The machine the dump is taken on.

use crate::error::{Error, Result};
use ckpt_image::{Arch, CpuInfo, HostInfo};

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Host facts. Missing /proc files and lines leave fields empty (other
/// architectures lack some); a number that cannot be parsed is an error
/// (reported for the dump of `pid`).
pub(crate) fn host_info(pid: ckpt_sys::Pid) -> Result<HostInfo> {
    let (xcr0, xsave_size) = ckpt_sys::ptrace::xsave_info();
    let mut cpu = CpuInfo {
        xcr0,
        xsave_size,
        ..Default::default()
    };
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    // The first processor's block.
    for (i, line) in cpuinfo.lines().enumerate() {
        if line.trim().is_empty() {
            break;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        let num = || {
            v.parse().map_err(|_| Error::Parse {
                pid,
                file: "/proc/cpuinfo".into(),
                line: i + 1,
                what: format!("{k}: {v:?} is not a number"),
            })
        };
        match k {
            "vendor_id" => cpu.vendor = v.to_string(),
            "model name" => cpu.model_name = v.to_string(),
            "cpu family" => cpu.family = num()?,
            "model" => cpu.model = num()?,
            "stepping" => cpu.stepping = num()?,
            "flags" => cpu.flags = v.split_whitespace().map(str::to_string).collect(),
            _ => {}
        }
    }
    Ok(HostInfo {
        hostname: read_trim("/proc/sys/kernel/hostname"),
        kernel_release: read_trim("/proc/sys/kernel/osrelease"),
        arch: if cfg!(target_arch = "x86_64") {
            Arch::X8664
        } else if cfg!(target_arch = "aarch64") {
            Arch::Aarch64
        } else {
            Arch::Unknown
        },
        page_size: ckpt_sys::mm::page_size() as u32,
        cpu,
        boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
    })
}
