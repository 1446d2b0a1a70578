//! Compiles every kernel source with NVRTC for compute_90 and assembles it with
//! `ptxas -arch=sm_90 -v`: no GPU needed. Fails on a compile error, on a kernel of the table
//! missing from the PTX, or on a register spill in a hot kernel; prints registers per kernel.
//!
//! NVRTC and ptxas come from the CUDA toolkit or from the PyPI wheels
//! `nvidia-cuda-nvrtc==13.0.88` / `nvidia-cuda-nvcc==13.0.88`. Found through
//! `TINYRT_NVRTC_DIR` (the folder holding libnvrtc.so.13) and `TINYRT_PTXAS`, else through
//! `python3 -c 'import nvidia'`, else the library path and `PATH`. Skipped with a notice when
//! absent, unless `TINYRT_REQUIRE_NVRTC=1`.
#![cfg(feature = "cuda")]

use std::path::{Path, PathBuf};
use std::process::Command;

use tinyrt_cuda::{compile_ptx, nvrtc_available, Kernel, SourceFile};

const REEXEC_MARK: &str = "TINYRT_NVRTC_REEXEC";

fn required() -> bool {
    std::env::var("TINYRT_REQUIRE_NVRTC").is_ok_and(|v| v == "1")
}

fn skip(why: &str) {
    assert!(!required(), "TINYRT_REQUIRE_NVRTC=1 but {why}");
    eprintln!("SKIPPED nvrtc test: {why}");
}

/// The `nvidia/cu13` folder of the pip wheels, if Python can import them.
fn wheel_dir() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], 'cu13'))",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    dir.is_dir().then_some(dir)
}

fn nvrtc_dir() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("TINYRT_NVRTC_DIR") {
        return Some(PathBuf::from(d));
    }
    wheel_dir()
        .map(|d| d.join("lib"))
        .filter(|d| d.join("libnvrtc.so.13").exists())
}

fn ptxas() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("TINYRT_PTXAS") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = wheel_dir()
        .map(|d| d.join("bin/ptxas"))
        .filter(|p| p.exists())
    {
        return Some(p);
    }
    let on_path = Command::new("ptxas")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    on_path.then(|| PathBuf::from("ptxas"))
}

/// The dynamic loader reads LD_LIBRARY_PATH once at start-up, so when NVRTC is only found
/// through the wheel, run this test again in a child process that has it on the path.
fn rerun_with_library_path(dir: &Path) -> bool {
    let old = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    let path = if old.is_empty() {
        dir.display().to_string()
    } else {
        format!("{}:{old}", dir.display())
    };
    let exe = std::env::current_exe().expect("test binary path");
    let status = Command::new(exe)
        .args([
            "--exact",
            "every_kernel_compiles_and_assembles_for_sm_90",
            "--nocapture",
        ])
        .env("LD_LIBRARY_PATH", path)
        .env(REEXEC_MARK, "1")
        .status()
        .expect("re-run the test binary");
    status.success()
}

#[derive(Debug, Default, Clone)]
struct Usage {
    registers: u32,
    stack: u32,
    spill_stores: u32,
    spill_loads: u32,
}

/// Parses `ptxas -v` output into (function, usage) pairs.
fn parse_ptxas(log: &str) -> Vec<(String, Usage)> {
    let mut out: Vec<(String, Usage)> = Vec::new();
    let number_before = |line: &str, word: &str| -> u32 {
        let words: Vec<&str> = line.split_whitespace().collect();
        words
            .windows(2)
            .find(|w| w[1].starts_with(word))
            .and_then(|w| w[0].parse().ok())
            .unwrap_or(0)
    };
    for line in log.lines() {
        if let Some(rest) = line.split("Function properties for ").nth(1) {
            out.push((rest.trim().to_string(), Usage::default()));
        } else if let Some((_, u)) = out.last_mut() {
            if line.contains("stack frame") {
                u.stack = number_before(line, "bytes stack");
                let parts: Vec<&str> = line.split(',').collect();
                for p in parts {
                    if p.contains("spill stores") {
                        u.spill_stores = number_before(p, "bytes");
                    } else if p.contains("spill loads") {
                        u.spill_loads = number_before(p, "bytes");
                    }
                }
                if line.trim_start().starts_with(|c: char| c.is_ascii_digit()) {
                    u.stack = line
                        .split_whitespace()
                        .next()
                        .and_then(|w| w.parse().ok())
                        .unwrap_or(0);
                }
            } else if line.contains("Used ") && line.contains("registers") {
                u.registers = number_before(line, "registers");
            }
        }
    }
    out
}

#[test]
fn every_kernel_compiles_and_assembles_for_sm_90() {
    if !nvrtc_available() {
        match nvrtc_dir() {
            Some(dir) if std::env::var(REEXEC_MARK).is_err() => {
                assert!(
                    rerun_with_library_path(&dir),
                    "the NVRTC test failed (run with {})",
                    dir.display()
                );
                return;
            }
            _ => return skip("libnvrtc not found (pip install nvidia-cuda-nvrtc==13.0.88)"),
        }
    }
    let Some(ptxas) = ptxas() else {
        return skip("ptxas not found (pip install nvidia-cuda-nvcc==13.0.88)");
    };
    let tmp = std::env::temp_dir().join(format!("tinyrt-nvrtc-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for file in SourceFile::ALL {
        let ptx = match compile_ptx(file, "compute_90") {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{e}"));
                continue;
            }
        };
        for k in Kernel::ALL.iter().filter(|k| k.source() == file) {
            if !ptx.contains(&format!(".entry {}(", k.name())) {
                failures.push(format!("{} has no entry {}", file.file_name(), k.name()));
            }
        }
        let ptx_path = tmp.join(file.file_name()).with_extension("ptx");
        std::fs::write(&ptx_path, &ptx).expect("write ptx");
        let out = Command::new(&ptxas)
            .arg("-arch=sm_90")
            .arg("-v")
            .arg(&ptx_path)
            .arg("-o")
            .arg(ptx_path.with_extension("cubin"))
            .output()
            .expect("run ptxas");
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            failures.push(format!("ptxas failed on {}:\n{log}", file.file_name()));
            continue;
        }
        for (name, u) in parse_ptxas(&log) {
            let hot = Kernel::ALL.iter().any(|k| k.name() == name && k.is_hot());
            if hot && (u.spill_stores > 0 || u.spill_loads > 0) {
                failures.push(format!("hot kernel {name} spills: {u:?}"));
            }
            report.push((file.file_name(), name, u, hot));
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    println!("| file | kernel | registers | stack bytes | spill stores | spill loads | hot |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (file, name, u, hot) in &report {
        println!(
            "| {file} | {name} | {} | {} | {} | {} | {} |",
            u.registers, u.stack, u.spill_stores, u.spill_loads, hot
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        report.len(),
        Kernel::COUNT,
        "ptxas reported a different number of kernels than the table holds"
    );
}
