//! A model's weights as the CPU backend reads them: the mapped tensors checked against the
//! kernels of the model's ISA, vectors copied to f32, and the matrices `--requant` converted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::super::requant::{is_matmul_weight, requant_matrices, RequantReport};
use super::super::{WeightEntry, WeightId, WeightTable};
use crate::kernels::cpu::fgemm::{FloatPanels, FPANEL};
use crate::kernels::cpu::pool::ThreadPool;
use crate::kernels::cpu::{Isa, Kernels, QMatrix, Repacked};
use crate::kernels::quant::{self, GgmlType, QuantFormat};

/// Errors preparing weights for the CPU.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error("tensor {name} has type {ty}, which the CPU backend does not support")]
    UnsupportedType { name: String, ty: GgmlType },
    #[error("this CPU cannot run the {0} kernels")]
    Isa(&'static str),
    #[error("the CPU backend cannot convert weights to {0}")]
    UnsupportedRequant(QuantFormat),
    #[error("cannot start the worker threads: {0}")]
    Threads(String),
    #[error("converting the weights: {0}")]
    Requant(String),
}

pub(crate) fn threads_error(e: std::io::Error) -> CpuError {
    CpuError::Threads(e.to_string())
}

/// A model's weights as the CPU backend uses them; shared by every session.
pub struct CpuWeights {
    /// The kernels of the model's ISA, checked against the CPU once, here.
    kernels: &'static Kernels,
    pub(super) table: Arc<WeightTable>,
    /// f32 copies of single-row tensors (norm weights, biases, frequency factors).
    vectors: Vec<Option<Vec<f32>>>,
    /// Matmul weights converted at load (`--requant`): they replace the mapped bytes in
    /// every matrix product; embedding lookups still read the mapped original.
    requant: Vec<Option<OwnedMatrix>>,
    /// Matmul weights repacked at load for the ISA's one-token product and panel packing
    /// (`Kernels::repack`): the products read them instead of the bytes of [`CpuWeights::matrix`]
    /// (the same bits either way).
    repacked: Vec<Option<Repacked>>,
    /// Matrices packed for the float GEMM at load ([`CpuWeights::with_panels`]): their
    /// products take f32 activations and run on `Kernels::matmul_panels`.
    panels: Vec<Option<FloatPanels>>,
    report: Option<RequantReport>,
}

/// Packed encoder matrices up to this size are all held as f32 (see
/// [`CpuWeights::with_panels`]): all-MiniLM-L6-v2's are 42 MB, DistilBERT's 170 MB.
pub const F32_PANEL_BYTES: usize = 256 << 20;

/// A matrix converted at load: its format and bytes.
type OwnedMatrix = (QuantFormat, Vec<u8>);

impl CpuWeights {
    /// Check every tensor against the kernels of `isa` and copy the vectors out.
    pub fn new(table: Arc<WeightTable>, isa: Isa) -> Result<Arc<CpuWeights>, CpuError> {
        Self::with_requant(
            table,
            isa,
            None,
            &ThreadPool::new(1).map_err(threads_error)?,
        )
    }

    /// [`CpuWeights::new`], and with `requant` every matmul weight whose row length is a whole
    /// number of `requant` blocks is converted to it in memory (dequantized to f32 row by row,
    /// then quantized with the kernels' quantizer; [`requant_matrices`]), on `pool`; like
    /// bitsandbytes' `load_in_4bit` for [`QuantFormat::Nf4`].
    /// The output head (`output.weight` or the tied token embedding) is kept as stored, as
    /// bitsandbytes keeps `lm_head`: it is the most sensitive matrix, and a tied embedding
    /// would otherwise be held twice. Embedding lookups always read the stored original.
    pub fn with_requant(
        table: Arc<WeightTable>,
        isa: Isa,
        requant: Option<QuantFormat>,
        pool: &ThreadPool,
    ) -> Result<Arc<CpuWeights>, CpuError> {
        Self::with_conversion(table, isa, requant, pool, &|_| true, &|_, _| {}, true)
    }

    /// [`CpuWeights::with_requant`] converting only the matmul weights `admit` accepts, telling
    /// `progress` (matrices converted, matrices to convert) as it goes; and with `repack` every
    /// matmul weight the ISA can repack (`Kernels::repack`) repacked on `pool`, its mapped
    /// pages given back (the products read only the repacked bytes, and so do the embedding
    /// lookups of a tied output head).
    pub fn with_conversion(
        table: Arc<WeightTable>,
        isa: Isa,
        requant: Option<QuantFormat>,
        pool: &ThreadPool,
        admit: &(dyn Fn(&WeightEntry) -> bool + Sync),
        progress: &(dyn Fn(usize, usize) + Sync),
        repack: bool,
    ) -> Result<Arc<CpuWeights>, CpuError> {
        let kernels = Kernels::get(isa).ok_or(CpuError::Isa(isa.name()))?;
        let mut vectors = Vec::with_capacity(table.entries().len());
        for (i, e) in table.entries().iter().enumerate() {
            let usable = if e.rows() == 1 {
                quant::is_supported(e.ty)
            } else {
                // Matrices are multiplied (and embedding rows dequantized).
                kernels.act_type(e.ty).is_some() && quant::is_supported(e.ty)
            };
            if !usable {
                return Err(CpuError::UnsupportedType {
                    name: e.name.clone(),
                    ty: e.ty,
                });
            }
            if e.rows() == 1 {
                let mut v = vec![0.0f32; e.cols()];
                dequantize_row(e.ty, table.data(WeightId(i as u32)), &mut v);
                vectors.push(Some(v));
            } else {
                vectors.push(None);
            }
        }
        let (requant, report) = match requant {
            Some(fmt) => {
                if kernels.act_type(fmt).is_none() || !fmt.is_supported() {
                    return Err(CpuError::UnsupportedRequant(fmt));
                }
                let (converted, rep) = requant_matrices(&table, fmt, pool, admit, progress)
                    .map_err(|e| CpuError::Requant(e.to_string()))?;
                let owned = converted
                    .into_iter()
                    .map(|c| c.map(|data| (fmt, data)))
                    .collect();
                (owned, Some(rep))
            }
            None => (vec![None; table.entries().len()], None),
        };
        let panels = vec![None; table.entries().len()];
        let mut w = CpuWeights {
            kernels,
            table,
            vectors,
            requant,
            repacked: Vec::new(),
            panels,
            report,
        };
        w.repacked = if repack {
            w.repack_matrices(pool)
        } else {
            (0..w.table.entries().len()).map(|_| None).collect()
        };
        Ok(Arc::new(w))
    }

    /// Every matmul weight repacked where the kernels can (see [`CpuWeights::with_conversion`]),
    /// one matrix per thread at a time; the mapped pages of those read as stored are given back
    /// as each is done.
    fn repack_matrices(&self, pool: &ThreadPool) -> Vec<Option<Repacked>> {
        let entries = self.table.entries();
        let mut todo: Vec<usize> = (0..entries.len())
            .filter(|&i| is_matmul_weight(&self.table, &entries[i]))
            .collect();
        // The largest first: while a matrix is repacked both its copies are resident, so the
        // load's peak memory is lowest when the big ones (an output head) go before the heap
        // holds the others.
        todo.sort_by_key(|&i| std::cmp::Reverse(self.matrix(WeightId(i as u32)).1.len()));
        let slots: Vec<Mutex<Option<Repacked>>> = todo.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        pool.run_dynamic(|_, _| loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            let Some(&i) = todo.get(k) else { break };
            let id = WeightId(i as u32);
            let r = self.kernels.repack(&self.qmatrix(id));
            // At once, so that the load never holds both copies of more than one matrix per
            // thread.
            if r.is_some() && self.requant[i].is_none() {
                self.table.release(id);
            }
            *slots[k].lock().unwrap_or_else(|p| p.into_inner()) = r;
        });
        let mut out: Vec<Option<Repacked>> = (0..entries.len()).map(|_| None).collect();
        for (&i, slot) in todo.iter().zip(slots) {
            out[i] = slot.into_inner().unwrap_or_else(|p| p.into_inner());
        }
        out
    }

    /// [`CpuWeights::new`], with the matrices `admit` accepts packed for the float GEMM (f32
    /// activations, one FMA chain per output), for encoders, whose accuracy target the 8-bit
    /// activations of the quantized products miss. Up to [`F32_PANEL_BYTES`] of packed
    /// matrices every one is dequantized exactly to f32 (the f16 panels' widening costs 15% of
    /// the GEMM's speed: `benches/examples/fgemm_speed.rs`); above, f32 matrices stay f32 and
    /// the others are held as f16 (half the memory; block-quantized ones rounded to f16).
    pub fn with_panels(
        table: Arc<WeightTable>,
        isa: Isa,
        admit: &(dyn Fn(&WeightEntry) -> bool + Sync),
    ) -> Result<Arc<CpuWeights>, CpuError> {
        let pool = ThreadPool::new(1).map_err(threads_error)?;
        let base = Self::with_conversion(
            Arc::clone(&table),
            isa,
            None,
            &pool,
            &|_| false,
            &|_, _| {},
            false,
        )?;
        let mut w = Arc::into_inner(base).expect("not shared yet");
        let entries = table.entries();
        let f32_bytes: usize = entries
            .iter()
            .filter(|e| e.rows() > 1 && admit(e))
            .map(|e| e.rows().next_multiple_of(FPANEL) * e.cols() * 4)
            .sum();
        let all_f32 = f32_bytes <= F32_PANEL_BYTES;
        let packed: Vec<Option<FloatPanels>> = {
            let pack = |i: usize| -> Option<FloatPanels> {
                let e = &entries[i];
                if e.rows() == 1 || !admit(e) {
                    return None;
                }
                let data = table.data(WeightId(i as u32));
                let rb = data.len() / e.rows();
                let f16 = !all_f32 && e.ty != GgmlType::F32;
                Some(FloatPanels::pack(e.rows(), e.cols(), f16, |r, buf| {
                    dequantize_row(e.ty, &data[r * rb..(r + 1) * rb], buf)
                }))
            };
            (0..entries.len()).map(pack).collect()
        };
        w.panels = packed;
        Ok(Arc::new(w))
    }

    /// The float-GEMM panels of `id`, where it was packed at load.
    pub(super) fn panels(&self, id: WeightId) -> Option<&FloatPanels> {
        self.panels[id.0 as usize].as_ref()
    }

    /// The registered tensors.
    pub fn table(&self) -> &WeightTable {
        &self.table
    }

    /// The kernel table the weights were checked against (every session's CPU backend uses it).
    pub fn kernels(&self) -> &'static Kernels {
        self.kernels
    }

    /// What `--requant` did, `None` without it.
    pub fn requant_report(&self) -> Option<&RequantReport> {
        self.report.as_ref()
    }

    pub(super) fn vector(&self, id: WeightId) -> &[f32] {
        self.vectors[id.0 as usize]
            .as_deref()
            .expect("weight used as a vector is a matrix")
    }

    /// The matrix a product reads for `id`: [`CpuWeights::matrix`]'s bytes, and their
    /// repacked form where it was made at load.
    pub(super) fn qmatrix(&self, id: WeightId) -> QMatrix<'_> {
        let e = self.table.entry(id);
        let (ty, data) = self.matrix(id);
        QMatrix {
            ty,
            data,
            rows: e.rows(),
            cols: e.cols(),
            repacked: self.repacked_of(id),
        }
    }

    /// The repacked form of `id`, where it was made at load.
    pub(super) fn repacked_of(&self, id: WeightId) -> Option<&Repacked> {
        self.repacked.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// How many matrices were repacked at load, and their bytes.
    pub fn repacked(&self) -> (usize, usize) {
        let r = self.repacked.iter().flatten();
        (r.clone().count(), r.map(Repacked::bytes).sum())
    }

    /// The format and bytes a matrix product reads for `id`.
    pub(super) fn matrix(&self, id: WeightId) -> (QuantFormat, &[u8]) {
        match &self.requant[id.0 as usize] {
            Some((fmt, data)) => (*fmt, data),
            None => (
                QuantFormat::Ggml(self.table.entry(id).ty),
                self.table.data(id),
            ),
        }
    }
}

/// Dequantize one row; the type was checked by [`CpuWeights::new`] and the length by the
/// weight table, so a failure is a bug.
pub(super) fn dequantize_row(ty: GgmlType, src: &[u8], out: &mut [f32]) {
    if let Err(e) = quant::dequantize(ty, src, out) {
        panic!("dequantize {ty}: {e}");
    }
}
