//! Metadata values and the ordered key/value store with typed accessors.

use super::GgufError;

/// GGUF metadata value type ids (`gguf_type` in ggml's gguf.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    pub fn id(self) -> u32 {
        self as u32
    }

    /// The smallest number of bytes one value of this type takes in a file
    /// (a string is at least its 8-byte length; an array its 4-byte type and 8-byte count).
    pub fn min_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }

    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Array),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A metadata array: GGUF arrays hold elements of one type and never nest.
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// A short name of the type, e.g. `u32` or `array of string`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Array(a) => a.type_name(),
            v => v.value_type().name(),
        }
    }

    /// The value as an i128 if it is an integer of any width.
    pub fn as_integer(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v.into(),
            Value::I8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U64(v) => v.into(),
            Value::I64(v) => v.into(),
            _ => return None,
        })
    }
}

impl Array {
    pub fn element_type(&self) -> ValueType {
        match self {
            Array::U8(_) => ValueType::U8,
            Array::I8(_) => ValueType::I8,
            Array::U16(_) => ValueType::U16,
            Array::I16(_) => ValueType::I16,
            Array::U32(_) => ValueType::U32,
            Array::I32(_) => ValueType::I32,
            Array::F32(_) => ValueType::F32,
            Array::Bool(_) => ValueType::Bool,
            Array::String(_) => ValueType::String,
            Array::U64(_) => ValueType::U64,
            Array::I64(_) => ValueType::I64,
            Array::F64(_) => ValueType::F64,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn type_name(&self) -> &'static str {
        match self.element_type() {
            ValueType::U8 => "array of u8",
            ValueType::I8 => "array of i8",
            ValueType::U16 => "array of u16",
            ValueType::I16 => "array of i16",
            ValueType::U32 => "array of u32",
            ValueType::I32 => "array of i32",
            ValueType::F32 => "array of f32",
            ValueType::Bool => "array of bool",
            ValueType::String => "array of string",
            ValueType::U64 => "array of u64",
            ValueType::I64 => "array of i64",
            ValueType::F64 => "array of f64",
            ValueType::Array => "array of array",
        }
    }
}

/// The metadata key/value pairs of a file, in file order, with typed accessors.
///
/// Lookup goes through `sorted`, the entry indices ordered by key (4 bytes per entry rather
/// than a hash map's copy of every key, which keeps memory proportional to the file).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    sorted: Vec<u32>,
}

impl Metadata {
    pub fn new() -> Metadata {
        Metadata::default()
    }

    /// Builds the store from pairs in file order; a repeated key is an error (GGUF keys are
    /// unique).
    pub fn from_entries(entries: Vec<(String, Value)>) -> Result<Metadata, GgufError> {
        let mut sorted: Vec<u32> = (0..entries.len() as u32).collect();
        sorted.sort_unstable_by(|&a, &b| entries[a as usize].0.cmp(&entries[b as usize].0));
        if let Some(w) = sorted
            .windows(2)
            .find(|w| entries[w[0] as usize].0 == entries[w[1] as usize].0)
        {
            return Err(GgufError::DuplicateKey {
                key: entries[w[0] as usize].0.clone(),
            });
        }
        Ok(Metadata { entries, sorted })
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.sorted
            .binary_search_by(|&i| self.entries[i as usize].0.as_str().cmp(key))
    }

    /// Appends a pair; a key that is already present is an error.
    pub fn insert(&mut self, key: String, value: Value) -> Result<(), GgufError> {
        match self.position(&key) {
            Ok(_) => Err(GgufError::DuplicateKey { key }),
            Err(p) => {
                self.sorted.insert(p, self.entries.len() as u32);
                self.entries.push((key, value));
                Ok(())
            }
        }
    }

    /// Sets a key: replaces the value in place when present, appends otherwise.
    pub fn set(&mut self, key: &str, value: Value) {
        match self.position(key) {
            Ok(p) => self.entries[self.sorted[p] as usize].1 = value,
            Err(p) => {
                self.sorted.insert(p, self.entries.len() as u32);
                self.entries.push((key.to_owned(), value));
            }
        }
    }

    /// Removes a key, keeping the order of the others.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let p = self.position(key).ok()?;
        let i = self.sorted.remove(p);
        for j in &mut self.sorted {
            if *j > i {
                *j -= 1;
            }
        }
        Some(self.entries.remove(i as usize).1)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        let p = self.position(key).ok()?;
        Some(&self.entries[self.sorted[p] as usize].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_ok()
    }

    /// Pairs in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_owned(),
        })
    }

    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        integer(key, self.require(key)?, "u32")
    }
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        integer(key, self.require(key)?, "u64")
    }
    pub fn get_i32(&self, key: &str) -> Result<i32, GgufError> {
        integer(key, self.require(key)?, "i32")
    }
    /// Accepts F32 and F64 values (F64 is rounded to f32).
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        float(key, self.require(key)?)
    }
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        match self.require(key)? {
            Value::Bool(b) => Ok(*b),
            v => Err(wrong_type(key, "bool", v)),
        }
    }
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        match self.require(key)? {
            Value::String(s) => Ok(s),
            v => Err(wrong_type(key, "string", v)),
        }
    }
    pub fn get_str_array(&self, key: &str) -> Result<&[String], GgufError> {
        match self.require(key)? {
            Value::Array(Array::String(a)) => Ok(a),
            v => Err(wrong_type(key, "array of string", v)),
        }
    }
    pub fn get_f32_array(&self, key: &str) -> Result<&[f32], GgufError> {
        match self.require(key)? {
            Value::Array(Array::F32(a)) => Ok(a),
            v => Err(wrong_type(key, "array of f32", v)),
        }
    }
    pub fn get_i32_array(&self, key: &str) -> Result<&[i32], GgufError> {
        match self.require(key)? {
            Value::Array(Array::I32(a)) => Ok(a),
            v => Err(wrong_type(key, "array of i32", v)),
        }
    }

    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        optional(self.get_u32(key))
    }
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        optional(self.get_u64(key))
    }
    pub fn opt_i32(&self, key: &str) -> Result<Option<i32>, GgufError> {
        optional(self.get_i32(key))
    }
    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        optional(self.get_f32(key))
    }
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        optional(self.get_bool(key))
    }
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        optional(self.get_str(key))
    }
    pub fn opt_str_array(&self, key: &str) -> Result<Option<&[String]>, GgufError> {
        optional(self.get_str_array(key))
    }
    pub fn opt_f32_array(&self, key: &str) -> Result<Option<&[f32]>, GgufError> {
        optional(self.get_f32_array(key))
    }
    pub fn opt_i32_array(&self, key: &str) -> Result<Option<&[i32]>, GgufError> {
        optional(self.get_i32_array(key))
    }
}

fn optional<T>(r: Result<T, GgufError>) -> Result<Option<T>, GgufError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(GgufError::MissingKey { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn wrong_type(key: &str, expected: &'static str, found: &Value) -> GgufError {
    GgufError::WrongType {
        key: key.to_owned(),
        expected,
        found: found.type_name(),
    }
}

fn integer<T: TryFrom<i128>>(key: &str, v: &Value, target: &'static str) -> Result<T, GgufError> {
    let n = v.as_integer().ok_or_else(|| wrong_type(key, target, v))?;
    T::try_from(n).map_err(|_| GgufError::OutOfRange {
        key: key.to_owned(),
        value: n.to_string(),
        target,
    })
}

fn float(key: &str, v: &Value) -> Result<f32, GgufError> {
    match *v {
        Value::F32(x) => Ok(x),
        Value::F64(x) => Ok(x as f32),
        _ => Err(wrong_type(key, "f32", v)),
    }
}
