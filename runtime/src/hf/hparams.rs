//! `config.json` (and `generation_config.json`) as llama.cpp's converter reads them: a JSON
//! object whose keys are looked up by lists of aliases (`find_hparam`), a present-but-null key
//! counting as absent.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value as Json};

use super::HfError;

/// The largest JSON file read whole (config files are a few KB; this only stops a wrong path
/// from filling memory).
const MAX_JSON_BYTES: u64 = 64 << 20;

/// Reads and parses a JSON file; `Ok(None)` when it does not exist.
pub(crate) fn read_json(path: &Path) -> Result<Option<Json>, HfError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        _ => {}
    }
    let bytes = crate::files::read_input_capped(path, MAX_JSON_BYTES)?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| HfError::Json {
            path: path.to_owned(),
            msg: e.to_string(),
        })
}

/// The hyperparameters of `config.json` (with a `text_config` object merged over the top
/// level, as the converter does).
#[derive(Clone, Debug)]
pub(crate) struct Hparams {
    path: PathBuf,
    map: Map<String, Json>,
}

impl Hparams {
    /// Reads `dir/config.json`.
    pub(crate) fn read(dir: &Path) -> Result<Hparams, HfError> {
        let path = dir.join("config.json");
        let json = read_json(&path)?.ok_or_else(|| HfError::NoConfig {
            dir: dir.to_owned(),
        })?;
        Hparams::from_json(path, json)
    }

    /// Hyperparameters from a parsed `config.json` at `path`.
    pub(crate) fn from_json(path: PathBuf, json: Json) -> Result<Hparams, HfError> {
        let Json::Object(mut map) = json else {
            return Err(HfError::Config {
                path,
                msg: "not a JSON object".into(),
            });
        };
        if let Some(Json::Object(text)) = map.get("text_config").cloned() {
            for (k, v) in text {
                map.insert(k, v);
            }
        }
        Ok(Hparams { path, map })
    }

    /// The merged hyperparameters as one JSON object.
    pub(crate) fn json(&self) -> Json {
        Json::Object(self.map.clone())
    }

    /// The file these came from.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A `config.json` error with `msg`.
    pub(crate) fn bad(&self, msg: impl Into<String>) -> HfError {
        HfError::Config {
            path: self.path.clone(),
            msg: msg.into(),
        }
    }

    /// The value of `key`, `None` when absent or null.
    pub(crate) fn get(&self, key: &str) -> Option<&Json> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Whether `key` is present (even as null).
    pub(crate) fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// The converter's `find_hparam(keys, optional=True)`: the value of the first key that is
    /// present, `None` when that value is null or no key is present.
    pub(crate) fn find<'a, 'k>(&'a self, keys: &[&'k str]) -> Option<(&'k str, &'a Json)> {
        let (k, v) = keys
            .iter()
            .find_map(|k| self.map.get(*k).map(|v| (*k, v)))?;
        (!v.is_null()).then_some((k, v))
    }

    /// [`Hparams::find`] as a u32.
    pub(crate) fn find_u32(&self, keys: &[&str]) -> Result<Option<u32>, HfError> {
        self.find(keys).map(|(k, v)| self.as_u32(k, v)).transpose()
    }

    /// [`Hparams::find`] as a u32 that must be there.
    pub(crate) fn req_u32(&self, keys: &[&str]) -> Result<u32, HfError> {
        self.find_u32(keys)?
            .ok_or_else(|| self.bad(format!("none of {} is given", keys.join(", "))))
    }

    /// [`Hparams::find`] as an f32 (any JSON number, rounded like Python's `struct.pack("f")`).
    pub(crate) fn find_f32(&self, keys: &[&str]) -> Result<Option<f32>, HfError> {
        self.find(keys).map(|(k, v)| self.as_f32(k, v)).transpose()
    }

    /// A value as a u32.
    pub(crate) fn as_u32(&self, key: &str, v: &Json) -> Result<u32, HfError> {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| self.bad(format!("{key} is {v}, expected an integer in 0..2^32")))
    }

    /// A value as an f32.
    pub(crate) fn as_f32(&self, key: &str, v: &Json) -> Result<f32, HfError> {
        v.as_f64()
            .map(|x| x as f32)
            .ok_or_else(|| self.bad(format!("{key} is {v}, expected a number")))
    }

    /// `key` as a bool, `None` when absent or null.
    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>, HfError> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.bad(format!("{key} is {v}, expected true or false")))
            })
            .transpose()
    }
}
