//! The ggml type table.

/// A ggml tensor element type, as stored in the GGUF tensor table (`ggml_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
}

/// Static facts about a type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeInfo {
    pub name: &'static str,
    /// The `ggml_type` id used in GGUF files.
    pub id: u32,
    /// Elements per block.
    pub block_size: usize,
    /// Bytes per block.
    pub type_size: usize,
}

const fn ti(name: &'static str, id: u32, block_size: usize, type_size: usize) -> TypeInfo {
    TypeInfo {
        name,
        id,
        block_size,
        type_size,
    }
}

impl GgmlType {
    /// Every type the table knows, in id order.
    pub const ALL: [GgmlType; 32] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        GgmlType::IQ2_XXS,
        GgmlType::IQ2_XS,
        GgmlType::IQ3_XXS,
        GgmlType::IQ1_S,
        GgmlType::IQ4_NL,
        GgmlType::IQ3_S,
        GgmlType::IQ2_S,
        GgmlType::IQ4_XS,
        GgmlType::I8,
        GgmlType::I16,
        GgmlType::I32,
        GgmlType::I64,
        GgmlType::F64,
        GgmlType::IQ1_M,
        GgmlType::BF16,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
        GgmlType::MXFP4,
    ];

    /// Facts about this type (ggml's `type_traits`).
    pub const fn info(self) -> TypeInfo {
        use GgmlType::*;
        match self {
            F32 => ti("F32", 0, 1, 4),
            F16 => ti("F16", 1, 1, 2),
            Q4_0 => ti("Q4_0", 2, 32, 18),
            Q4_1 => ti("Q4_1", 3, 32, 20),
            Q5_0 => ti("Q5_0", 6, 32, 22),
            Q5_1 => ti("Q5_1", 7, 32, 24),
            Q8_0 => ti("Q8_0", 8, 32, 34),
            Q8_1 => ti("Q8_1", 9, 32, 36),
            Q2_K => ti("Q2_K", 10, 256, 84),
            Q3_K => ti("Q3_K", 11, 256, 110),
            Q4_K => ti("Q4_K", 12, 256, 144),
            Q5_K => ti("Q5_K", 13, 256, 176),
            Q6_K => ti("Q6_K", 14, 256, 210),
            Q8_K => ti("Q8_K", 15, 256, 292),
            IQ2_XXS => ti("IQ2_XXS", 16, 256, 66),
            IQ2_XS => ti("IQ2_XS", 17, 256, 74),
            IQ3_XXS => ti("IQ3_XXS", 18, 256, 98),
            IQ1_S => ti("IQ1_S", 19, 256, 50),
            IQ4_NL => ti("IQ4_NL", 20, 32, 18),
            IQ3_S => ti("IQ3_S", 21, 256, 110),
            IQ2_S => ti("IQ2_S", 22, 256, 82),
            IQ4_XS => ti("IQ4_XS", 23, 256, 136),
            I8 => ti("I8", 24, 1, 1),
            I16 => ti("I16", 25, 1, 2),
            I32 => ti("I32", 26, 1, 4),
            I64 => ti("I64", 27, 1, 8),
            F64 => ti("F64", 28, 1, 8),
            IQ1_M => ti("IQ1_M", 29, 256, 56),
            BF16 => ti("BF16", 30, 1, 2),
            TQ1_0 => ti("TQ1_0", 34, 256, 54),
            TQ2_0 => ti("TQ2_0", 35, 256, 66),
            MXFP4 => ti("MXFP4", 39, 32, 17),
        }
    }

    /// The type with this GGUF id, or `None` for an unknown or removed id.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.iter().copied().find(|t| t.info().id == id)
    }

    pub const fn name(self) -> &'static str {
        self.info().name
    }
    pub const fn id(self) -> u32 {
        self.info().id
    }
    pub const fn block_size(self) -> usize {
        self.info().block_size
    }
    pub const fn type_size(self) -> usize {
        self.info().type_size
    }

    /// Bytes taken by `n_elements` values of this type, or `None` when `n_elements` is not a
    /// multiple of the block size or the product overflows.
    pub fn row_bytes(self, n_elements: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if !n_elements.is_multiple_of(bs) {
            return None;
        }
        (n_elements / bs).checked_mul(self.type_size() as u64)
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_are_unique() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
        }
        for removed in [4u32, 5, 31, 32, 33, 36, 37, 38, 40, 1000] {
            assert_eq!(GgmlType::from_id(removed), None);
        }
    }

    #[test]
    fn row_bytes_checks_divisibility_and_overflow() {
        assert_eq!(GgmlType::Q4_0.row_bytes(64), Some(36));
        assert_eq!(GgmlType::Q4_0.row_bytes(33), None);
        assert_eq!(GgmlType::Q6_K.row_bytes(256), Some(210));
        assert_eq!(GgmlType::F32.row_bytes(u64::MAX), None);
    }
}
