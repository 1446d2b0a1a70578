//! A debugging wrapper around any [`Backend`]: after every op it writes the op's output rows
//! to a file, so two runs (two ISAs, or tinyrt and llama.cpp's `llama-eval-callback`) can be
//! compared op by op. Enabled by `TINYRT_DUMP=DIR` (read when a session makes its backend,
//! `Model::new_backend`): each op writes `DIR/NNNNN-OP-lLL.f32` (little-endian f32, rows ×
//! cols; `LL` is the layer, counted at each `attention`), and `DIR/index.txt` lists
//! `NNNNN OP rows cols` one a line.
//!
//! With `TINYRT_DUMP_REF=REFDIR` too (a folder an earlier run dumped, e.g. with another ISA),
//! each output is compared with the reference's (max |Δ| and max |Δ| / max |ref| go to
//! `index.txt`) and then replaced by it, so every op is measured on the very inputs of the
//! reference run: an op that differs there differs by itself, not by what came before.
//! `TINYRT_DUMP_FORCE=op,op` (names as in the file names) forces only those ops.
//!
//! Only for investigation: it copies every output, so it is slow.

use std::io::Write;
use std::path::PathBuf;

use super::{AttnParams, Backend, BufId, PoolKind, RopeParams, WeightId};
use crate::kv_cache::KvCacheSpec;

/// [`Backend`] that forwards every call to `inner` and dumps each output.
pub struct DumpBackend {
    inner: Box<dyn Backend>,
    dir: PathBuf,
    /// Column count of each buffer (by id).
    cols: Vec<usize>,
    seq: usize,
    layer: usize,
    index: Option<std::fs::File>,
    /// Folder of a reference dump to compare with and force (see the module docs).
    reference: Option<PathBuf>,
    /// `TINYRT_DUMP_FORCE=op,op`: force only these ops to the reference (default: all).
    force_ops: Option<Vec<String>>,
}

impl DumpBackend {
    /// Dump into `dir` (created if missing; files of a previous run are overwritten).
    pub fn new(inner: Box<dyn Backend>, dir: PathBuf, reference: Option<PathBuf>) -> DumpBackend {
        if let Err(e) = std::fs::create_dir_all(&dir) {
            // A debugging aid: a closed stderr is no reason to panic.
            let _ = std::io::Write::write_fmt(
                &mut std::io::stderr(),
                format_args!(
                    "tinyrt: TINYRT_DUMP: cannot create {}: {e}\n",
                    dir.display()
                ),
            );
        }
        let index = std::fs::File::create(dir.join("index.txt")).ok();
        DumpBackend {
            inner,
            dir,
            cols: Vec::new(),
            seq: 0,
            layer: 0,
            index,
            reference,
            force_ops: std::env::var("TINYRT_DUMP_FORCE")
                .ok()
                .map(|v| v.split(',').map(|s| s.trim().to_string()).collect()),
        }
    }

    /// Write rows `0..n` of `buf` as op `op`.
    fn dump(&mut self, op: &str, buf: BufId, n: usize) {
        let cols = self.cols[buf.0 as usize];
        let mut data = vec![0.0f32; n * cols];
        self.inner.read(buf, 0, &mut data);
        let name = format!("{:05}-{op}-l{:02}.f32", self.seq, self.layer);
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        if let Err(e) = std::fs::write(self.dir.join(&name), bytes) {
            let _ = std::io::Write::write_fmt(
                &mut std::io::stderr(),
                format_args!("tinyrt: TINYRT_DUMP: {name}: {e}\n"),
            );
        }
        let mut cmp = String::new();
        if let Some(r) = &self.reference {
            match std::fs::read(r.join(&name)) {
                Ok(b) if b.len() == data.len() * 4 => {
                    let refv: Vec<f32> = b
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    let maxd = data
                        .iter()
                        .zip(&refv)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0f32, f32::max);
                    let maxr = refv.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
                    cmp = format!(" maxabs {maxd:.3e} rel {:.3e}", maxd / maxr.max(1e-30));
                    let force = self
                        .force_ops
                        .as_ref()
                        .is_none_or(|ops| ops.iter().any(|o| o == op));
                    if !force || !self.inner.write(buf, 0, &refv) {
                        cmp.push_str(" (not forced)");
                    }
                }
                _ => cmp = " (no reference)".into(),
            }
        }
        if let Some(f) = &mut self.index {
            let _ = writeln!(f, "{:05} {op} {n} {cols} l{:02}{cmp}", self.seq, self.layer);
        }
        self.seq += 1;
    }
}

impl Backend for DumpBackend {
    fn name(&self) -> String {
        format!("{}+dump", self.inner.name())
    }

    fn alloc(&mut self, rows: usize, cols: usize) -> BufId {
        let id = self.inner.alloc(rows, cols);
        let i = id.0 as usize;
        if self.cols.len() <= i {
            self.cols.resize(i + 1, 0);
        }
        self.cols[i] = cols;
        id
    }

    fn alloc_kv_cache(&mut self, spec: &KvCacheSpec) {
        self.inner.alloc_kv_cache(spec)
    }

    fn embed(&mut self, table: WeightId, tokens: &[u32], out: BufId) {
        self.layer = 0;
        self.inner.embed(table, tokens, out);
        self.dump("embed", out, tokens.len());
    }

    fn rms_norm(&mut self, x: BufId, w: WeightId, eps: f32, out: BufId, n: usize) {
        self.inner.rms_norm(x, w, eps, out, n);
        self.dump("rms_norm", out, n);
    }

    fn layer_norm(
        &mut self,
        x: BufId,
        w: WeightId,
        b: Option<WeightId>,
        eps: f32,
        out: BufId,
        n: usize,
    ) {
        self.inner.layer_norm(x, w, b, eps, out, n);
        self.dump("layer_norm", out, n);
    }

    fn head_rms_norm(&mut self, x: BufId, w: WeightId, eps: f32, head_dim: usize, n: usize) {
        self.inner.head_rms_norm(x, w, eps, head_dim, n);
        self.dump("head_rms_norm", x, n);
    }

    fn matmul(&mut self, x: BufId, outs: &[(WeightId, BufId)], n: usize) {
        self.inner.matmul(x, outs, n);
        for &(_, o) in outs {
            self.dump("matmul", o, n);
        }
    }

    fn add_bias(&mut self, x: BufId, b: WeightId, n: usize) {
        self.inner.add_bias(x, b, n);
        self.dump("add_bias", x, n);
    }

    fn add(&mut self, dst: BufId, src: BufId, n: usize) {
        self.inner.add(dst, src, n);
        self.dump("add", dst, n);
    }

    fn scale(&mut self, x: BufId, s: f32, n: usize) {
        self.inner.scale(x, s, n);
        self.dump("scale", x, n);
    }

    fn rope(
        &mut self,
        x: BufId,
        n_heads: usize,
        head_dim: usize,
        pos0: usize,
        n: usize,
        p: &RopeParams,
    ) {
        self.inner.rope(x, n_heads, head_dim, pos0, n, p);
        self.dump("rope", x, n);
    }

    fn attention(
        &mut self,
        layer: usize,
        q: BufId,
        k: BufId,
        v: BufId,
        pos0: usize,
        n: usize,
        p: &AttnParams,
        out: BufId,
    ) {
        self.layer = layer;
        self.inner.attention(layer, q, k, v, pos0, n, p, out);
        self.dump("attention", out, n);
    }

    fn swiglu(&mut self, gate: BufId, up: BufId, n: usize) {
        self.inner.swiglu(gate, up, n);
        self.dump("swiglu", gate, n);
    }

    fn geglu(&mut self, gate: BufId, up: BufId, n: usize) {
        self.inner.geglu(gate, up, n);
        self.dump("geglu", gate, n);
    }

    fn gelu(&mut self, x: BufId, n: usize) {
        self.inner.gelu(x, n);
        self.dump("gelu", x, n);
    }

    fn attention_packed(
        &mut self,
        q: BufId,
        k: BufId,
        v: BufId,
        seqs: &[u32],
        p: &AttnParams,
        out: BufId,
    ) {
        self.inner.attention_packed(q, k, v, seqs, p, out);
        self.dump("attention", out, seqs.last().map_or(0, |&n| n as usize));
    }

    fn pool(&mut self, x: BufId, seqs: &[u32], kind: PoolKind, out: BufId) {
        self.inner.pool(x, seqs, kind, out);
        self.dump("pool", out, seqs.len().saturating_sub(1));
    }

    fn set_lora(&mut self, terms: &[super::LoraTerm]) {
        self.inner.set_lora(terms);
    }

    fn gelu_erf(&mut self, x: BufId, n: usize) {
        self.inner.gelu_erf(x, n);
        self.dump("gelu_erf", x, n);
    }

    fn copy_cols(
        &mut self,
        src: BufId,
        src_col: usize,
        dst: BufId,
        dst_col: usize,
        width: usize,
        n: usize,
    ) {
        self.inner.copy_cols(src, src_col, dst, dst_col, width, n);
    }

    fn copy_row(&mut self, src: BufId, src_row: usize, dst: BufId, dst_row: usize) {
        self.inner.copy_row(src, src_row, dst, dst_row);
    }

    fn read(&mut self, buf: BufId, row0: usize, out: &mut [f32]) {
        self.inner.read(buf, row0, out);
    }

    fn argmax(&mut self, buf: BufId, row: usize, cols: usize) -> u32 {
        self.inner.argmax(buf, row, cols)
    }

    fn write(&mut self, buf: BufId, row0: usize, data: &[f32]) -> bool {
        self.inner.write(buf, row0, data)
    }

    fn take_error(&mut self) -> Option<String> {
        self.inner.take_error()
    }
}
