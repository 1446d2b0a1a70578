//! `--requant`: the matmul weights converted to another format once, at load, for either
//! backend (like bitsandbytes' `load_in_4bit`). The choice of matrices and the conversion are
//! here, once; the CPU backend keeps the converted bytes in `CpuWeights`, the CUDA backend
//! uploads them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{WeightEntry, WeightId, WeightTable};
use crate::kernels::cpu::pool::ThreadPool;
use crate::kernels::quant::{self, QuantFormat};

/// What converting the matmul weights at load did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequantReport {
    pub format: QuantFormat,
    /// Matrices converted.
    pub converted: usize,
    /// Matmul weights kept as stored (row length not a whole number of blocks).
    pub kept: Vec<String>,
    /// The output head, kept as stored (see [`CpuWeights::with_requant`]).
    pub head: Option<String>,
    /// Resident bytes of all matmul weights as stored in the file.
    pub bytes_before: u64,
    /// Resident bytes of all matmul weights after the conversion.
    pub bytes_after: u64,
    /// What all matmul weights would take as f16.
    pub bytes_f16: u64,
}

impl std::fmt::Display for RequantReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let saved = 100.0 * (1.0 - self.bytes_after as f64 / self.bytes_f16.max(1) as f64);
        write!(
            f,
            "requant {}: {} matrices, matmul weights {:.1} MiB (as stored {:.1} MiB; f16 would be {:.1} MiB, saved {:.0}%)",
            self.format.name().to_ascii_lowercase(),
            self.converted,
            mib(self.bytes_after),
            mib(self.bytes_before),
            mib(self.bytes_f16),
            saved
        )?;
        if let Some(h) = &self.head {
            write!(f, "; output head {h} kept as stored")?;
        }
        if !self.kept.is_empty() {
            write!(
                f,
                "; kept as stored (row length not a multiple of {}): {}",
                self.format.block_size(),
                self.kept.join(", ")
            )?;
        }
        Ok(())
    }
}

/// The matrices a matrix product reads: every registered tensor of more than one row, except
/// the token embedding when a separate `output.weight` exists (then it is only looked up).
pub(crate) fn is_matmul_weight(table: &WeightTable, e: &WeightEntry) -> bool {
    e.rows() > 1
        && !(e.name == "token_embd.weight"
            && table.entries().iter().any(|o| o.name == "output.weight"))
}

/// The output head (`output.weight`, or the token embedding it is tied to): like
/// bitsandbytes' `load_in_4bit`, which skips `lm_head`, requant keeps it as stored. Measured on
/// SmolLM2-135M Q4_1 (4 chunks of 256, NF4 then in blocks of 64 with absmax scales):
/// converting its Q8_0 tied head too gave perplexity 29.1 against 25.6 without it (19.3 as
/// stored).
fn is_output_head(table: &WeightTable, e: &WeightEntry) -> bool {
    e.name == "output.weight"
        || (e.name == "token_embd.weight"
            && !table.entries().iter().any(|o| o.name == "output.weight"))
}

/// Per registered tensor, its bytes converted to the report's format (`None`: kept as stored).
pub type Converted = Vec<Option<Vec<u8>>>;

/// Converts the matmul weights of `table` to `fmt` on `pool`: every matrix a product reads,
/// except the output head, whose row length is a whole number of `fmt` blocks and which
/// `admit` accepts (a backend's own limits), dequantized to f32 row by row and quantized with
/// the kernels' quantizer. Each matrix is converted whole by one thread, so the bytes do not
/// depend on the thread count. Every other matmul weight is kept as stored and named in the
/// report.
pub fn requant_matrices(
    table: &WeightTable,
    fmt: QuantFormat,
    pool: &ThreadPool,
    admit: impl Fn(&WeightEntry) -> bool,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(Converted, RequantReport), quant::QuantError> {
    let block = fmt.block_size();
    let mut report = RequantReport {
        format: fmt,
        converted: 0,
        kept: Vec::new(),
        head: None,
        bytes_before: 0,
        bytes_after: 0,
        bytes_f16: 0,
    };
    let mut todo = Vec::new();
    for (i, e) in table.entries().iter().enumerate() {
        if !is_matmul_weight(table, e) {
            continue;
        }
        let stored = table.data(WeightId(i as u32)).len() as u64;
        report.bytes_before += stored;
        report.bytes_f16 += 2 * e.numel() as u64;
        if is_output_head(table, e) {
            report.bytes_after += stored;
            report.head = Some(e.name.clone());
        } else if e.cols() % block == 0 && admit(e) {
            todo.push(i);
        } else {
            report.bytes_after += stored;
            report.kept.push(e.name.clone());
        }
    }
    let slots: Vec<Mutex<Option<ConvertResult>>> = todo.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    progress(0, todo.len());
    pool.run_dynamic(|_, _| loop {
        let k = next.fetch_add(1, Ordering::Relaxed);
        let Some(&i) = todo.get(k) else { break };
        let r = convert(table, WeightId(i as u32), fmt);
        // The stored bytes are not read again: their mapped pages leave resident memory now,
        // so a bf16 folder loaded with `--requant nf4` never holds all of both.
        table.release(WeightId(i as u32));
        progress(done.fetch_add(1, Ordering::Relaxed) + 1, todo.len());
        *slots[k].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
    });
    let mut converted = vec![None; table.entries().len()];
    for (&i, slot) in todo.iter().zip(slots) {
        let data = slot
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .expect("every matrix was taken by a thread")?;
        report.bytes_after += data.len() as u64;
        report.converted += 1;
        converted[i] = Some(data);
    }
    Ok((converted, report))
}

/// One matrix converted, or why not.
type ConvertResult = Result<Vec<u8>, quant::QuantError>;

/// One matrix of `table` converted to `fmt`, row by row.
fn convert(
    table: &WeightTable,
    id: WeightId,
    fmt: QuantFormat,
) -> Result<Vec<u8>, quant::QuantError> {
    let e = table.entry(id);
    let src = table.data(id);
    let (cols, rows) = (e.cols(), e.rows());
    let src_row = src.len() / rows;
    let dst_row = cols / fmt.block_size() * fmt.type_size();
    let mut out = vec![0u8; rows * dst_row];
    let mut row = vec![0.0f32; cols];
    for (dst, s) in out.chunks_mut(dst_row).zip(src.chunks(src_row)) {
        quant::dequantize(e.ty, s, &mut row)?;
        quant::quantize_format(fmt, &row, dst)?;
    }
    Ok(out)
}
