//! The one small seeded generator of the tests, benchmarks and tools (random weights, test
//! inputs, benchmark tokens): SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom
//! number generators", OOPSLA 2014). One 64-bit state, every bit of output mixed, fast; not for
//! anything that must be unpredictable. Sampling has its own generator
//! (`tinyrt::sampler::Rng`), whose stream is part of `--seed`'s contract.

/// SplitMix64; the same seed gives the same stream on every machine.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub const fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1), on a grid of 2^-23.
    pub fn unit_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// Uniform in (0, 1), never 0 (a logarithm of it is finite).
    pub fn open01_f64(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// A standard normal value (Box–Muller over two [`SplitMix64::open01_f64`] draws).
    pub fn gauss_f32(&mut self) -> f32 {
        let (u, v) = (self.open01_f64(), self.open01_f64());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is below 2^-40 for the sizes used here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_stream() {
        // splitmix64.c (Vigna) from seed 0: the first outputs.
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(r.next_u64(), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn ranges_hold() {
        let mut r = SplitMix64::new(7);
        for _ in 0..10_000 {
            let u = r.unit_f32();
            assert!((-1.0..1.0).contains(&u));
            let o = r.open01_f64();
            assert!(o > 0.0 && o < 1.0);
            assert!(r.gauss_f32().is_finite());
            assert!(r.below(10) < 10);
        }
    }
}
