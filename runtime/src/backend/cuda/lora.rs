//! A session's LoRA terms on the device: each pair's `A` (`r × n_in`) and `B` (transposed,
//! `r × n_out`) uploaded once as f32 and kept while the session's set uses the pair, so that
//! switching sets uploads only the pairs that are new and frees the ones no longer used.
//! `Backend::matmul` records one `Op::Lora` per term of each product's weight after the
//! product (`exec.rs`: `lora_down` then `lora_up`).

use std::sync::Arc;

use tinyrt_cuda::{CudaDevice, DeviceBuffer};

use super::weights::DeviceWeight;
use crate::adapters::{LoraAdapter, LoraPair};
use crate::backend::{LoraTerm, WeightId};

/// A pair by identity: the adapter's `Arc` address and the pair's index in it. The slot
/// holding the pair also holds the `Arc`, so the address cannot be reused while it is cached.
pub(super) type PairKey = (usize, usize);

fn key_of(t: &LoraTerm) -> PairKey {
    (Arc::as_ptr(&t.adapter) as usize, t.pair)
}

/// One pair's matrices on the device.
pub(super) struct LoraSlot {
    key: PairKey,
    /// Keeps `key`'s address owned while the slot lives.
    _adapter: Arc<LoraAdapter>,
    pub(super) rank: usize,
    pub(super) n_in: usize,
    pub(super) n_out: usize,
    /// `A`, `rank × n_in` row-major.
    pub(super) a: DeviceBuffer<f32>,
    /// `B` transposed, `rank × n_out` row-major.
    pub(super) bt: DeviceBuffer<f32>,
}

/// One term of the active set: the products of `weight` get `scale · B·(A·x)` of `slot`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct ActiveTerm {
    pub(super) weight: WeightId,
    pub(super) slot: usize,
    pub(super) scale: f32,
}

/// The uploaded pairs and the session's active terms.
#[derive(Default)]
pub(super) struct DeviceLora {
    pub(super) slots: Vec<LoraSlot>,
    pub(super) terms: Vec<ActiveTerm>,
}

/// How a new set reuses the uploaded pairs: the slots it keeps (indices into the old list,
/// in order) and the pairs it must upload (distinct, in the order the set first names them).
/// The new slot list is the kept slots, then the uploaded ones.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SlotPlan {
    pub(super) keep: Vec<usize>,
    pub(super) upload: Vec<PairKey>,
}

pub(super) fn plan_slots(old: &[PairKey], new: &[PairKey]) -> SlotPlan {
    let keep = (0..old.len()).filter(|&i| new.contains(&old[i])).collect();
    let mut upload: Vec<PairKey> = Vec::new();
    for k in new {
        if !old.contains(k) && !upload.contains(k) {
            upload.push(*k);
        }
    }
    SlotPlan { keep, upload }
}

/// Whether the CUDA backend can apply pair `p` to the weight `name` of `shape` (rows, cols;
/// `None`: a vector): `B·A` must have the weight's shape and the rank fit `lora_up`.
pub(super) fn check_pair(
    p: &LoraPair,
    shape: Option<(usize, usize)>,
    name: &str,
) -> Result<(), String> {
    let Some((rows, cols)) = shape else {
        return Err(format!("LoRA pair {} on the vector {name}", p.target));
    };
    if (p.n_out, p.n_in) != (rows, cols) {
        return Err(format!(
            "LoRA pair {} is {}x{}, {name} is {rows}x{cols}",
            p.target, p.n_out, p.n_in
        ));
    }
    if p.rank == 0 || p.rank > tinyrt_cuda::LORA_MAX_RANK {
        return Err(format!(
            "LoRA pair {} has rank {}: the CUDA backend takes 1..={}",
            p.target,
            p.rank,
            tinyrt_cuda::LORA_MAX_RANK
        ));
    }
    Ok(())
}

/// `rows × cols` row-major, transposed.
pub(super) fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}

impl DeviceLora {
    /// Makes `terms` the active set: checks each pair against its weight ([`check_pair`]),
    /// uploads the pairs not on the device yet and frees those the set no longer uses; terms
    /// of scale 0 are left out. On an error the set is left empty (no term applies).
    pub(super) fn set(
        &mut self,
        dev: &CudaDevice,
        tensors: &[DeviceWeight],
        name: impl Fn(WeightId) -> String,
        terms: &[LoraTerm],
    ) -> Result<(), String> {
        self.terms.clear();
        for t in terms {
            let p = t.adapter.pairs.get(t.pair).ok_or_else(|| {
                format!(
                    "LoRA term names pair {} of an adapter of {}",
                    t.pair,
                    t.adapter.pairs.len()
                )
            })?;
            let shape = match &tensors[t.weight.0 as usize] {
                DeviceWeight::Matrix { rows, cols, .. } => Some((*rows, *cols)),
                DeviceWeight::Vector(_) => None,
            };
            check_pair(p, shape, &name(t.weight))?;
        }
        // A term of scale 0 adds nothing: leaving it out keeps the step's fusions (and bits)
        // those of the base.
        let terms: Vec<&LoraTerm> = terms.iter().filter(|t| t.scale != 0.0).collect();
        let keys: Vec<PairKey> = terms.iter().map(|t| key_of(t)).collect();
        let old: Vec<PairKey> = self.slots.iter().map(|s| s.key).collect();
        let plan = plan_slots(&old, &keys);
        let mut fresh = Vec::with_capacity(plan.upload.len());
        for k in &plan.upload {
            let t = terms
                .iter()
                .find(|t| key_of(t) == *k)
                .ok_or("LoRA slot plan names a pair of no term")?;
            let p = &t.adapter.pairs[t.pair];
            let up = |v: &[f32]| dev.upload(v).map_err(|e| format!("LoRA {}: {e}", p.target));
            fresh.push(LoraSlot {
                key: *k,
                _adapter: Arc::clone(&t.adapter),
                rank: p.rank,
                n_in: p.n_in,
                n_out: p.n_out,
                a: up(&p.a.to_rows())?,
                bt: up(&transpose(&p.b.to_rows(), p.n_out, p.rank))?,
            });
        }
        let mut old_slots: Vec<Option<LoraSlot>> = self.slots.drain(..).map(Some).collect();
        self.slots = plan
            .keep
            .iter()
            .filter_map(|&i| old_slots[i].take())
            .chain(fresh)
            .collect();
        // Dropping the rest frees the pairs no term uses any more.
        drop(old_slots);
        self.terms = terms
            .iter()
            .zip(&keys)
            .map(|(t, k)| {
                let slot = self.slots.iter().position(|s| s.key == *k);
                slot.map(|slot| ActiveTerm {
                    weight: t.weight,
                    slot,
                    scale: t.scale,
                })
                .ok_or_else(|| "LoRA pair missing after upload".to_string())
            })
            .collect::<Result<_, _>>()?;
        Ok(())
    }

    /// The active terms of `weight`, in the set's order.
    pub(super) fn terms_of(&self, weight: WeightId) -> impl Iterator<Item = &ActiveTerm> {
        self.terms.iter().filter(move |t| t.weight == weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_set_keeps_shared_pairs_uploads_new_ones_once_and_drops_the_rest() {
        let (a0, a1, b0) = ((1, 0), (1, 1), (2, 0));
        // First set: everything is new, each pair once even when named twice.
        assert_eq!(
            plan_slots(&[], &[a0, a1, a0]),
            SlotPlan {
                keep: vec![],
                upload: vec![a0, a1]
            }
        );
        // Switching to {a1, b0}: a1 stays where it is, b0 is uploaded, a0 is freed.
        assert_eq!(
            plan_slots(&[a0, a1], &[b0, a1]),
            SlotPlan {
                keep: vec![1],
                upload: vec![b0]
            }
        );
        // The same set again: nothing to upload.
        assert_eq!(
            plan_slots(&[a1, b0], &[a1, b0]),
            SlotPlan {
                keep: vec![0, 1],
                upload: vec![]
            }
        );
        // No adapters: everything is freed.
        assert_eq!(
            plan_slots(&[a1, b0], &[]),
            SlotPlan {
                keep: vec![],
                upload: vec![]
            }
        );
    }

    #[test]
    fn pairs_must_match_their_weight_and_fit_the_kernel() {
        let pair = |r: usize, n_in: usize, n_out: usize| {
            let (a, b) = (vec![0.5; r * n_in], vec![0.25; n_out * r]);
            LoraPair::new("blk.0.attn_q.weight".into(), n_in, n_out, r, &a, &b)
        };
        assert_eq!(check_pair(&pair(8, 64, 32), Some((32, 64)), "q"), Ok(()));
        // Transposed shape, a vector, a rank lora_up cannot hold.
        let e = check_pair(&pair(8, 64, 32), Some((64, 32)), "q").unwrap_err();
        assert!(e.contains("is 32x64, q is 64x32"), "{e}");
        assert!(check_pair(&pair(8, 64, 32), None, "q").is_err());
        let e = check_pair(&pair(257, 64, 32), Some((32, 64)), "q").unwrap_err();
        assert!(e.contains("rank 257"), "{e}");
    }

    #[test]
    fn transpose_swaps_rows_and_columns() {
        // 2 x 3 -> 3 x 2.
        let m = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(transpose(&m, 2, 3), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }
}
