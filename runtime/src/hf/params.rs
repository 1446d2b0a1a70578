//! The metadata llama.cpp's converter writes before the tokenizer, in its order:
//! `general.architecture` and `general.type`, the `general.sampling.*` of
//! `generation_config.json`, the names (`Metadata.set_gguf_meta_model`), the model class's
//! `set_gguf_parameters` (with `general.file_type` where the class writes it) and
//! `general.quantization_version`.
//!
//! A key written twice keeps its first position with the last value, as in the converter's
//! writer (a Python dict).

use std::path::Path;

use serde_json::{Map, Value as Json};

use super::arch::Arch;
use super::hparams::{read_json, Hparams};
use super::naming;
use super::HfError;
use crate::gguf::{Metadata, Value};

/// Builds the metadata in order.
struct Md {
    md: Metadata,
    arch: &'static str,
}

impl Md {
    fn set(&mut self, key: &str, v: Value) {
        self.md.set(key, v);
    }
    /// `{arch}.{key}`.
    fn arch(&mut self, key: &str, v: Value) {
        let k = format!("{}.{key}", self.arch);
        self.md.set(&k, v);
    }
    /// `add_string`: empty strings are not written.
    fn string(&mut self, key: &str, s: Option<String>) {
        if let Some(s) = s.filter(|s| !s.is_empty()) {
            self.md.set(key, Value::String(s));
        }
    }
}

/// The rope settings of `TextModel.__init__`: `rope_parameters` (or `rope_scaling`), with the
/// top-level `rope_theta`, local theta, partial rotary factor and original context mirrored in
/// when the config has no per-layer-type sections.
pub(crate) fn rope_parameters(hp: &Hparams) -> Result<Map<String, Json>, HfError> {
    let given = if hp.has("rope_parameters") {
        hp.get("rope_parameters")
    } else {
        hp.get("rope_scaling")
    };
    let mut rp = match given {
        None => Map::new(),
        Some(Json::Object(m)) => m.clone(),
        Some(v) => return Err(hp.bad(format!("rope parameters are {v}, expected an object"))),
    };
    let find = |keys: &[&str]| hp.find(keys).map(|(_, v)| v.clone());
    let theta = find(&[
        "global_rope_theta",
        "rope_global_theta",
        "rope_theta_global",
        "rope_theta",
        "rotary_emb_base",
    ]);
    let local = find(&[
        "local_rope_theta",
        "rope_local_theta",
        "rope_theta_local",
        "swa_rope_theta",
        "rope_local_base_freq",
    ]);
    let partial = find(&["partial_rotary_factor", "rope_pct", "rope_percent"]);
    let original = find(&["original_max_position_embeddings"]);
    if !rp.contains_key("full_attention") && !rp.contains_key("sliding_attention") {
        if let Some(l) = local {
            let mut m = Map::new();
            m.insert("rope_theta".into(), l);
            rp.insert("sliding_attention".into(), Json::Object(m));
        }
        for (key, v) in [
            ("rope_theta", theta),
            ("partial_rotary_factor", partial),
            ("original_max_position_embeddings", original),
        ] {
            if let Some(v) = v.filter(|_| !rp.contains_key(key)) {
                rp.insert(key.into(), v);
            }
        }
        if !rp.contains_key("rope_type") {
            if let Some(t) = rp.get("type").filter(|t| !t.is_null()).cloned() {
                rp.insert("rope_type".into(), t);
            }
        }
    }
    Ok(rp)
}

/// The metadata of the folder `dir`, up to and including `general.quantization_version`.
pub(crate) fn metadata(
    dir: &Path,
    arch: Arch,
    hp: &Hparams,
    total_params: u64,
    file_type: u32,
) -> Result<Metadata, HfError> {
    let mut md = Md {
        md: Metadata::new(),
        arch: arch.gguf_name(),
    };
    md.set(
        "general.architecture",
        Value::String(arch.gguf_name().into()),
    );
    md.set("general.type", Value::String("model".into()));
    sampling(&mut md, dir)?;
    names(&mut md, dir, hp, total_params);
    let rp = rope_parameters(hp)?;
    match arch {
        Arch::Llama => {
            text_model(&mut md, hp, &rp, file_type)?;
            md.arch("vocab_size", Value::U32(hp.req_u32(&["vocab_size"])?));
            md.arch("rope.dimension_count", Value::U32(head_dim(hp)?));
        }
        Arch::Qwen2 | Arch::Qwen3 => {
            text_model(&mut md, hp, &rp, file_type)?;
            pooling(&mut md, dir, hp)?;
        }
        Arch::Bert | Arch::DistilBert => bert(&mut md, dir, arch, hp, &rp, file_type)?,
        Arch::Gemma3 => gemma3(&mut md, hp, &rp, file_type)?,
        Arch::Phi2 => phi2(&mut md, hp, &rp, file_type)?,
        Arch::StableLm => stablelm(&mut md, hp, &rp, file_type)?,
    }
    md.set("general.quantization_version", Value::U32(2));
    Ok(md.md)
}

/// `general.sampling.*` from `generation_config.json` (ignored when absent or unreadable, as
/// in the converter: not every folder has a valid one).
fn sampling(md: &mut Md, dir: &Path) -> Result<(), HfError> {
    let gen = match read_json(&dir.join("generation_config.json")) {
        Ok(Some(Json::Object(m))) => m,
        _ => return Ok(()),
    };
    let get = |k: &str| gen.get(k).filter(|v| !v.is_null());
    let int = |v: &Json| {
        v.as_i64()
            .and_then(|x| i32::try_from(x).ok())
            .map(Value::I32)
    };
    let float = |v: &Json| v.as_f64().map(|x| Value::F32(x as f32));
    let keys: [(&str, &str, bool); 11] = [
        ("top_k", "top_k", true),
        ("top_p", "top_p", false),
        ("min_p", "min_p", false),
        ("xtc_probability", "xtc_probability", false),
        ("xtc_threshold", "xtc_threshold", false),
        ("temperature", "temp", false),
        ("penalty_last_n", "penalty_last_n", true),
        ("penalty_repeat", "penalty_repeat", false),
        ("mirostat", "mirostat", true),
        ("mirostat_tau", "mirostat_tau", false),
        ("mirostat_eta", "mirostat_eta", false),
    ];
    if let Some(s) = get("sequence").and_then(Json::as_str) {
        md.string("general.sampling.sequence", Some(s.to_owned()));
    }
    for (json_key, gguf_key, is_int) in keys {
        let v = match json_key {
            "penalty_repeat" => get("penalty_repeat").or_else(|| get("repetition_penalty")),
            k => get(k),
        };
        let Some(v) = v else { continue };
        let value = if is_int { int(v) } else { float(v) };
        if let Some(value) = value {
            md.set(&format!("general.sampling.{gguf_key}"), value);
        }
    }
    Ok(())
}

/// `general.name`, `organization`, `finetune`, `basename`, `size_label`: from
/// `_name_or_path` when it is a model id, else from the folder's name; the size label from
/// the parameter count when the names give none. (Model-card front matter is not read.)
fn names(md: &mut Md, dir: &Path, hp: &Hparams, total_params: u64) {
    let total = i64::try_from(total_params).unwrap_or(i64::MAX);
    let mut out = naming::IdParts::default();
    let mut merge = |p: naming::IdParts| {
        let fill = |slot: &mut Option<String>, v: Option<String>| {
            if slot.is_none() {
                *slot = v;
            }
        };
        fill(&mut out.name, p.name.map(|n| naming::id_to_title(&n)));
        fill(
            &mut out.organization,
            p.organization.map(|o| naming::id_to_title(&o)),
        );
        fill(&mut out.basename, p.basename);
        fill(&mut out.finetune, p.finetune);
        fill(&mut out.version, p.version);
        fill(&mut out.size_label, p.size_label);
    };
    if let Some(id) = hp.get("_name_or_path").and_then(Json::as_str) {
        if id.matches('/').count() <= 1 {
            merge(naming::model_id_components(id, total));
        }
    }
    merge(naming::model_id_components(&folder_name(dir), total));
    if out.size_label.is_none() && total_params > 0 {
        out.size_label = Some(naming::size_label(total_params));
    }
    md.string("general.name", out.name);
    md.string("general.version", out.version);
    md.string("general.organization", out.organization);
    md.string("general.finetune", out.finetune);
    md.string("general.basename", out.basename);
    md.string("general.size_label", out.size_label);
}

/// The folder's name as Python's `Path.name` gives it, or the resolved name for `.`-like
/// paths.
fn folder_name(dir: &Path) -> String {
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    name(dir)
        .or_else(|| dir.canonicalize().ok().as_deref().and_then(name))
        .unwrap_or_default()
}

/// `head_dim`, or hidden / heads.
fn head_dim(hp: &Hparams) -> Result<u32, HfError> {
    if let Some(d) = hp.find_u32(&["head_dim"])? {
        return Ok(d);
    }
    let hidden = hp.req_u32(&["hidden_size"])?;
    let heads = hp.req_u32(&["num_attention_heads"])?;
    hidden
        .checked_div(heads)
        .ok_or_else(|| hp.bad("num_attention_heads is 0"))
}

/// A JSON number of a rope section as f32.
fn json_f32(hp: &Hparams, key: &str, v: Option<&Json>) -> Result<Option<f32>, HfError> {
    v.filter(|v| !v.is_null())
        .map(|v| hp.as_f32(key, v))
        .transpose()
}

/// `TextModel.set_gguf_parameters` (what the llama, qwen2, qwen3 and gemma3 classes call
/// first).
fn text_model(
    md: &mut Md,
    hp: &Hparams,
    rp: &Map<String, Json>,
    file_type: u32,
) -> Result<(), HfError> {
    let u32s: [(&str, &[&str]); 6] = [
        (
            "block_count",
            &["n_layers", "num_hidden_layers", "n_layer", "num_layers"],
        ),
        (
            "context_length",
            &[
                "max_position_embeddings",
                "n_ctx",
                "n_positions",
                "max_length",
                "max_sequence_length",
                "model_max_length",
            ],
        ),
        ("embedding_length", &["hidden_size", "n_embd", "dim"]),
        (
            "feed_forward_length",
            &[
                "prefix_dense_intermediate_size",
                "dense_intermediate_size",
                "intermediate_size",
                "n_inner",
                "hidden_dim",
            ],
        ),
        (
            "attention.head_count",
            &["num_attention_heads", "n_head", "n_heads"],
        ),
        (
            "attention.head_count_kv",
            &["num_key_value_heads", "n_kv_heads"],
        ),
    ];
    for (i, (key, aliases)) in u32s.into_iter().enumerate() {
        let v = if i == 0 {
            Some(hp.req_u32(aliases)?)
        } else {
            hp.find_u32(aliases)?
        };
        if let Some(v) = v {
            md.arch(key, Value::U32(v));
        }
    }
    if hp.bool("is_causal")? == Some(false) {
        md.arch("attention.causal", Value::Bool(false));
    }
    let params = match rp.get("full_attention") {
        Some(Json::Object(m)) => m,
        Some(v) => return Err(hp.bad(format!("rope full_attention is {v}, expected an object"))),
        None => rp,
    };
    rope_scaling(md, hp, params)?;
    if let Some(theta) = json_f32(hp, "rope_theta", params.get("rope_theta"))? {
        md.arch("rope.freq_base", Value::F32(theta));
    }
    let swa = rp
        .get("sliding_attention")
        .and_then(|s| s.get("rope_theta"));
    if let Some(theta) = json_f32(hp, "sliding_attention.rope_theta", swa)? {
        md.arch("rope.freq_base_swa", Value::F32(theta));
    }
    if let Some(eps) = hp.find_f32(&["rms_norm_eps", "norm_eps"])? {
        md.arch("attention.layer_norm_rms_epsilon", Value::F32(eps));
    }
    if let Some(eps) = hp.find_f32(&["layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"])? {
        md.arch("attention.layer_norm_epsilon", Value::F32(eps));
    }
    for key in ["num_local_experts", "num_experts", "n_routed_experts"] {
        if hp.get(key).is_some() {
            return Err(hp.bad(format!(
                "{key}: mixture-of-experts models are not supported"
            )));
        }
    }
    if let Some(d) = hp.get("head_dim") {
        let d = hp.as_u32("head_dim", d)?;
        md.arch("attention.key_length", Value::U32(d));
        md.arch("attention.value_length", Value::U32(d));
    }
    md.set("general.file_type", Value::U32(file_type));
    Ok(())
}

/// The `rope_type` branch of `TextModel.set_gguf_parameters`.
fn rope_scaling(md: &mut Md, hp: &Hparams, params: &Map<String, Json>) -> Result<(), HfError> {
    let Some(kind) = params.get("rope_type").filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let kind = kind
        .as_str()
        .ok_or_else(|| hp.bad(format!("rope_type is {kind}, expected a string")))?;
    let factor = json_f32(hp, "rope factor", params.get("factor"))?;
    match (kind, factor) {
        ("linear", Some(f)) => {
            md.arch("rope.scaling.type", Value::String("linear".into()));
            md.arch("rope.scaling.factor", Value::F32(f));
        }
        ("yarn", Some(f)) => {
            md.arch("rope.scaling.type", Value::String("yarn".into()));
            md.arch("rope.scaling.factor", Value::F32(f));
            let orig = params
                .get("original_max_position_embeddings")
                .ok_or_else(|| {
                    hp.bad("yarn rope scaling without original_max_position_embeddings")
                })?;
            let orig = hp.as_u32("original_max_position_embeddings", orig)?;
            md.arch("rope.scaling.original_context_length", Value::U32(orig));
            for (json_key, alt, key) in [
                ("extrapolation_factor", "", "rope.scaling.yarn_ext_factor"),
                (
                    "attention_factor",
                    "attn_factor",
                    "rope.scaling.yarn_attn_factor",
                ),
                ("beta_fast", "", "rope.scaling.yarn_beta_fast"),
                ("beta_slow", "", "rope.scaling.yarn_beta_slow"),
            ] {
                let v = params.get(json_key).or_else(|| params.get(alt));
                if let Some(x) = json_f32(hp, json_key, v)? {
                    md.arch(key, Value::F32(x));
                }
            }
        }
        ("su" | "longrope", _) => {
            return Err(hp.bad(format!("rope_type {kind:?} is not supported")));
        }
        // llama3 is rope_freqs.weight; default and the rest write nothing.
        _ => {}
    }
    Ok(())
}

/// `Gemma3Model.set_gguf_parameters`.
fn gemma3(
    md: &mut Md,
    hp: &Hparams,
    rp: &Map<String, Json>,
    file_type: u32,
) -> Result<(), HfError> {
    text_model(md, hp, rp, file_type)?;
    let u = |k: &str, default: u32| -> Result<u32, HfError> {
        Ok(hp.find_u32(&[k])?.unwrap_or(default))
    };
    md.arch(
        "context_length",
        Value::U32(u("max_position_embeddings", 131072)?),
    );
    md.arch(
        "attention.head_count",
        Value::U32(u("num_attention_heads", 8)?),
    );
    let eps = hp.find_f32(&["rms_norm_eps"])?.unwrap_or(1e-6);
    md.arch("attention.layer_norm_rms_epsilon", Value::F32(eps));
    let hd = u("head_dim", 256)?;
    md.arch("attention.key_length", Value::U32(hd));
    md.arch("attention.value_length", Value::U32(hd));
    let full = match rp.get("full_attention") {
        Some(Json::Object(m)) => m,
        _ => rp,
    };
    let theta = json_f32(hp, "rope_theta", full.get("rope_theta"))?.unwrap_or(1e6);
    md.arch("rope.freq_base", Value::F32(theta));
    if hp.get("attn_logit_softcapping").is_some() {
        return Err(hp.bad("attn_logit_softcapping is not used by Gemma 3"));
    }
    if let Some(cap) = hp
        .find_f32(&["final_logit_softcapping"])?
        .filter(|&c| c != 0.0)
    {
        md.arch("final_logit_softcapping", Value::F32(cap));
    }
    let pattern_is_one = hp
        .get("sliding_window_pattern")
        .is_some_and(|v| v.as_f64() == Some(1.0));
    if !pattern_is_one {
        let w = hp
            .find_u32(&["sliding_window"])?
            .ok_or_else(|| hp.bad("sliding_window is not given"))?;
        md.arch("attention.sliding_window", Value::U32(w));
    }
    md.arch(
        "attention.head_count_kv",
        Value::U32(u("num_key_value_heads", 4)?),
    );
    Ok(())
}

/// The partial rotary factor the converter reads from the rope parameters.
fn rotary_factor(hp: &Hparams, rp: &Map<String, Json>) -> Result<f64, HfError> {
    let v = rp
        .get("partial_rotary_factor")
        .filter(|v| !v.is_null())
        .ok_or_else(|| hp.bad("partial_rotary_factor is not given"))?;
    v.as_f64()
        .filter(|f| (0.0..=1.0).contains(f))
        .ok_or_else(|| hp.bad(format!("partial_rotary_factor is {v}, expected 0..1")))
}

/// `Phi2Model.set_gguf_parameters`.
fn phi2(md: &mut Md, hp: &Hparams, rp: &Map<String, Json>, file_type: u32) -> Result<(), HfError> {
    let rot = rotary_factor(hp, rp)?;
    let n_embd = hp.req_u32(&["hidden_size", "n_embd"])?;
    let n_head = hp.req_u32(&["num_attention_heads", "n_head"])?;
    if n_head == 0 {
        return Err(hp.bad("num_attention_heads is 0"));
    }
    let ctx = hp.req_u32(&["n_positions", "max_position_embeddings"])?;
    let n_ff = n_embd
        .checked_mul(4)
        .ok_or_else(|| hp.bad("hidden_size is too large"))?;
    md.arch("context_length", Value::U32(ctx));
    md.arch("embedding_length", Value::U32(n_embd));
    md.arch("feed_forward_length", Value::U32(n_ff));
    md.arch(
        "block_count",
        Value::U32(hp.req_u32(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"])?),
    );
    md.arch("attention.head_count", Value::U32(n_head));
    md.arch("attention.head_count_kv", Value::U32(n_head));
    let eps = hp
        .find_f32(&["layer_norm_epsilon", "layer_norm_eps"])?
        .ok_or_else(|| hp.bad("layer_norm_eps is not given"))?;
    md.arch("attention.layer_norm_epsilon", Value::F32(eps));
    let rot_dims = (rot * f64::from(n_embd)) as u32 / n_head;
    md.arch("rope.dimension_count", Value::U32(rot_dims));
    md.set("general.file_type", Value::U32(file_type));
    // Phi2Model writes this tokenizer key among its hyperparameters.
    md.set("tokenizer.ggml.add_bos_token", Value::Bool(false));
    Ok(())
}

/// `BertModel.set_gguf_parameters` (and DistilBERT's, which writes its fixed epsilon first).
fn bert(
    md: &mut Md,
    dir: &Path,
    arch: Arch,
    hp: &Hparams,
    rp: &Map<String, Json>,
    file_type: u32,
) -> Result<(), HfError> {
    if arch == Arch::DistilBert {
        md.arch("attention.layer_norm_epsilon", Value::F32(1e-12));
    }
    text_model(md, hp, rp, file_type)?;
    md.arch("attention.causal", Value::Bool(false));
    pooling(md, dir, hp)?;
    let dims = super::arch::Dims::read(arch, hp)?;
    if !dims.labels.is_empty() {
        md.arch(
            "classifier.output_labels",
            Value::Array(crate::gguf::Array::String(dims.labels)),
        );
    }
    Ok(())
}

/// `_try_set_pooling_type`: the sentence-transformers pooling of `modules.json`, when present
/// (`pooling_type`: 1 mean, 2 cls, 3 last).
fn pooling(md: &mut Md, dir: &Path, hp: &Hparams) -> Result<(), HfError> {
    let modules_path = dir.join("modules.json");
    let Some(modules) = read_json(&modules_path)? else {
        return Ok(());
    };
    let bad = |msg: String| HfError::Config {
        path: modules_path.clone(),
        msg,
    };
    let list = modules
        .as_array()
        .ok_or_else(|| bad("not a list of modules".into()))?;
    let pooling_dir = list.iter().find_map(|m| {
        let ty = m.get("type")?.as_str()?;
        ty.ends_with("Pooling").then(|| m.get("path")?.as_str())?
    });
    if let Some(sub) = pooling_dir {
        if Path::new(sub)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(bad(format!(
                "pooling path {sub:?} is not inside the folder"
            )));
        }
        let cfg_path = dir.join(sub).join("config.json");
        let cfg = read_json(&cfg_path)?.unwrap_or(Json::Null);
        let flag = |k: &str| cfg.get(k).and_then(Json::as_bool) == Some(true);
        let mode = cfg.get("pooling_mode").and_then(Json::as_str);
        let ty = if flag("pooling_mode_mean_tokens") || mode == Some("mean") {
            1
        } else if flag("pooling_mode_cls_token") || mode == Some("cls") {
            2
        } else if flag("pooling_mode_lasttoken") || mode == Some("lasttoken") {
            3
        } else {
            return Err(HfError::Config {
                path: cfg_path,
                msg: "only mean, cls and last-token pooling are supported".into(),
            });
        };
        md.arch("pooling_type", Value::U32(ty));
    }
    if let Some(p) = hp.get("classifier_pooling") {
        return Err(hp.bad(format!("classifier_pooling {p} is not supported")));
    }
    Ok(())
}

/// `StableLMModel.set_gguf_parameters`.
fn stablelm(
    md: &mut Md,
    hp: &Hparams,
    rp: &Map<String, Json>,
    file_type: u32,
) -> Result<(), HfError> {
    let hidden = hp.req_u32(&["hidden_size"])?;
    let n_head = hp.req_u32(&["num_attention_heads"])?;
    if n_head == 0 {
        return Err(hp.bad("num_attention_heads is 0"));
    }
    md.arch(
        "context_length",
        Value::U32(hp.req_u32(&["max_position_embeddings"])?),
    );
    md.arch("embedding_length", Value::U32(hidden));
    md.arch(
        "block_count",
        Value::U32(hp.req_u32(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"])?),
    );
    md.arch(
        "feed_forward_length",
        Value::U32(hp.req_u32(&["intermediate_size"])?),
    );
    let rot = rotary_factor(hp, rp)?;
    let rot_dims = (rot * f64::from(hidden / n_head)) as u32;
    md.arch("rope.dimension_count", Value::U32(rot_dims));
    md.arch("attention.head_count", Value::U32(n_head));
    md.arch(
        "attention.head_count_kv",
        Value::U32(hp.req_u32(&["num_key_value_heads"])?),
    );
    let parallel = hp.bool("use_parallel_residual")?.unwrap_or(true);
    md.arch("use_parallel_residual", Value::Bool(parallel));
    let eps = hp
        .find_f32(&["layer_norm_eps", "norm_eps"])?
        .ok_or_else(|| hp.bad("layer_norm_eps is not given"))?;
    md.arch("attention.layer_norm_epsilon", Value::F32(eps));
    md.set("general.file_type", Value::U32(file_type));
    Ok(())
}
