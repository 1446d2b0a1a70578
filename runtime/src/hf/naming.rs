//! `general.name`, `general.basename`, `general.finetune`, `general.version` and
//! `general.size_label` as llama.cpp's converter derives them (`gguf-py/gguf/metadata.py`:
//! `get_model_id_components`, `id_to_title`; `utility.py`: `size_label`), from a model id such
//! as the folder's name and from the parameter count.

/// What a model id says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct IdParts {
    /// The full name component (after `org/`).
    pub name: Option<String>,
    pub organization: Option<String>,
    pub basename: Option<String>,
    pub finetune: Option<String>,
    pub version: Option<String>,
    pub size_label: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tag {
    Basename,
    SizeLabel,
    Finetune,
    Version,
    Type,
}

/// `Metadata.get_model_id_components(model_id, total_params)`.
pub(crate) fn model_id_components(model_id: &str, total_params: i64) -> IdParts {
    if model_id.contains(' ') {
        return IdParts {
            name: Some(model_id.to_owned()),
            ..IdParts::default()
        };
    }
    let (org, full) = match model_id.split_once('/') {
        Some((o, n)) => (Some(o), n),
        None => (None, model_id),
    };
    let org = org.filter(|o| !o.starts_with('.'));
    let mut parts: Vec<String> = full
        .split('-')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    let mut tags: Vec<Vec<Tag>> = vec![Vec::new(); parts.len()];
    for (i, (part, tag)) in parts.iter_mut().zip(tags.iter_mut()).enumerate() {
        annotate(i, part, tag, total_params);
    }
    // Word-based size labels go when a number-based one is present.
    let numeric_size = parts
        .iter()
        .zip(&tags)
        .any(|(p, t)| t.contains(&Tag::SizeLabel) && p.chars().any(|c| c.is_ascii_digit()));
    if numeric_size {
        for (p, t) in parts.iter().zip(tags.iter_mut()) {
            if t.contains(&Tag::SizeLabel) && p.chars().all(char::is_alphabetic) {
                t.retain(|&x| x != Tag::SizeLabel);
            }
        }
    }
    let mut at_start = true;
    for (p, t) in parts.iter().zip(tags.iter_mut()) {
        let alpha_start = p.chars().next().is_some_and(char::is_alphabetic);
        if at_start && ((t.is_empty() && alpha_start) || t.contains(&Tag::Version)) {
            t.push(Tag::Basename);
        } else {
            at_start = false;
            if t.is_empty() {
                t.push(Tag::Finetune);
            }
        }
    }
    // A trailing version is not part of the basename.
    for t in tags.iter_mut().rev() {
        if t.contains(&Tag::Basename) && t.len() > 1 {
            t.retain(|&x| x != Tag::Basename);
        } else {
            break;
        }
    }
    let join = |tag: Tag, exclude: Option<Tag>| -> Option<String> {
        let mut seen: Vec<&str> = Vec::new();
        for (p, t) in parts.iter().zip(&tags) {
            if t.contains(&tag) && exclude.is_none_or(|x| !t.contains(&x)) {
                if tag == Tag::SizeLabel && seen.contains(&p.as_str()) {
                    continue;
                }
                seen.push(p);
            }
        }
        (!seen.is_empty()).then(|| seen.join("-"))
    };
    let mut basename = join(Tag::Basename, None);
    let size_label = join(Tag::SizeLabel, None);
    let finetune = join(Tag::Finetune, None);
    let version = join(Tag::Version, Some(Tag::Basename));
    if size_label.is_none() && finetune.is_none() && version.is_none() {
        basename = None;
    }
    IdParts {
        name: Some(full.to_owned()),
        organization: org.map(str::to_owned),
        basename,
        finetune,
        version,
        size_label,
    }
}

/// The annotation loop of `get_model_id_components` for part `i`.
fn annotate(i: usize, part: &mut String, tags: &mut Vec<Tag>, total_params: i64) {
    if is_version(part) {
        tags.push(Tag::Version);
    } else if is_quant_type(part) {
        tags.push(Tag::Type);
        *part = part.to_uppercase();
    } else if i > 0 && is_size(part) {
        let mut p = part.replace('_', ".");
        let chars: Vec<char> = p.chars().collect();
        // bloom-7b1 → 7.1B
        if chars.last().is_some_and(|c| c.is_ascii_digit()) && chars.len() >= 2 {
            let n = chars.len();
            p = chars[..n - 2].iter().collect::<String>()
                + "."
                + &chars[n - 1].to_string()
                + &chars[n - 2].to_string();
        }
        let chars: Vec<char> = p.chars().collect();
        let n = chars.len();
        if n > 1 && chars[n - 2].is_ascii_digit() && "kmbt".contains(chars[n - 1]) {
            p = chars[..n - 1].iter().collect::<String>()
                + &chars[n - 1].to_uppercase().to_string();
        }
        if total_params != 0 {
            let chars: Vec<char> = p.chars().collect();
            let n = chars.len();
            let scale = " KMBT".find(chars[n - 1]);
            let number: Option<f64> = chars[..n - 1].iter().collect::<String>().parse().ok();
            if let (Some(x), Some(k)) = (number, scale.filter(|&k| k > 0)) {
                let label = x * 1000f64.powi(k as i32);
                let t = total_params as f64;
                let too_far = (total_params < 0 && label < (total_params.abs() / 8) as f64)
                    || (total_params > 0 && (label - t).abs() > (7 * total_params / 8) as f64);
                if too_far {
                    tags.push(Tag::Finetune);
                    p = chars[..n - 1].iter().collect::<String>()
                        + &chars[n - 1].to_lowercase().to_string();
                }
            }
        }
        if tags.is_empty() {
            tags.push(Tag::SizeLabel);
        }
        *part = p;
    } else if i > 0
        && ["chat", "instruct", "vision", "lora"].contains(&part.to_lowercase().as_str())
    {
        if total_params < 0 && part.eq_ignore_ascii_case("lora") {
            tags.push(Tag::Type);
        } else {
            tags.push(Tag::Finetune);
        }
    }
}

/// `(v|iter)?\d+([.]\d+)*`, case-insensitive, whole string.
fn is_version(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    let rest = l
        .strip_prefix("iter")
        .or_else(|| l.strip_prefix('v'))
        .unwrap_or(&l);
    !rest.is_empty()
        && rest
            .split('.')
            .all(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()))
        && rest.as_bytes()[0].is_ascii_digit()
}

/// `i?q\d(_\w)*|b?fp?(16|32)`, case-insensitive, whole string.
fn is_quant_type(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    let q = l.strip_prefix('i').unwrap_or(&l);
    if let Some(rest) = q.strip_prefix('q') {
        let b = rest.as_bytes();
        if !b.is_empty() && b[0].is_ascii_digit() {
            // (_\w)*: pairs of '_' and one word character.
            let tail = &b[1..];
            return tail.len().is_multiple_of(2)
                && tail
                    .chunks(2)
                    .all(|c| c[0] == b'_' && (c[1].is_ascii_alphanumeric() || c[1] == b'_'));
        }
    }
    let f = l.strip_prefix('b').unwrap_or(&l);
    let Some(f) = f.strip_prefix('f') else {
        return false;
    };
    let f = f.strip_prefix('p').unwrap_or(f);
    f == "16" || f == "32"
}

/// `(([A]|\d+[x])?\d+([._]\d+)?[KMBT][\d]?|small|mini|medium|large|x?xl)`, case-insensitive,
/// whole string.
fn is_size(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    if ["small", "mini", "medium", "large", "xl", "xxl"].contains(&l.as_str()) {
        return true;
    }
    let b = l.as_bytes();
    // Try every split of the optional prefix: "a", or digits followed by "x".
    let mut starts = vec![0usize];
    if b.first() == Some(&b'a') {
        starts.push(1);
    }
    let lead = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if lead > 0 && b.get(lead) == Some(&b'x') {
        starts.push(lead + 1);
    }
    starts.into_iter().any(|i| size_core(&b[i..]))
}

/// `\d+([._]\d+)?[kmbt]\d?` on lower-case bytes.
fn size_core(b: &[u8]) -> bool {
    let d = |b: &[u8]| b.iter().take_while(|c| c.is_ascii_digit()).count();
    let n = d(b);
    if n == 0 {
        return false;
    }
    let mut i = n;
    if matches!(b.get(i), Some(b'.' | b'_')) {
        let m = d(&b[i + 1..]);
        if m > 0 {
            i += 1 + m;
        }
    }
    if !matches!(b.get(i), Some(b'k' | b'm' | b'b' | b't')) {
        return false;
    }
    let rest = &b[i + 1..];
    rest.is_empty() || (rest.len() == 1 && rest[0].is_ascii_digit())
}

/// `Metadata.id_to_title`: words split on `-` and spaces, lower-case words title-cased unless
/// they are versions or start with a digit.
pub(crate) fn id_to_title(s: &str) -> String {
    s.trim()
        .replace('-', " ")
        .split_whitespace()
        .map(|w| {
            let lower = w.chars().any(char::is_lowercase) && !w.chars().any(char::is_uppercase);
            let versionish = w.starts_with(|c: char| c.is_ascii_digit())
                || w.strip_prefix('v').is_some_and(|r| {
                    !r.is_empty()
                        && r.split('.')
                            .all(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()))
                });
            if lower && !versionish {
                title(w)
            } else {
                w.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Python's `str.title()`: a letter after a non-letter is upper-cased, others lower-cased.
fn title(w: &str) -> String {
    let mut out = String::with_capacity(w.len());
    let mut prev_cased = false;
    for c in w.chars() {
        if prev_cased {
            out.extend(c.to_lowercase());
        } else {
            out.extend(c.to_uppercase());
        }
        prev_cased = c.is_alphabetic();
    }
    out
}

/// `gguf.size_label` without experts: `model_weight_count_rounded_notation(n, 2)`.
pub(crate) fn size_label(total_params: u64) -> String {
    let n = total_params as f64;
    let (scaled, suffix) = if n > 1e12 {
        (n * 1e-12, "T")
    } else if n > 1e9 {
        (n * 1e-9, "B")
    } else if n > 1e6 {
        (n * 1e-6, "M")
    } else {
        (n * 1e-3, "K")
    };
    let rounded = scaled.round_ties_even() as u64;
    let digits = rounded.to_string();
    let digits = digits.trim_start_matches('0').len();
    let fix = 2usize.saturating_sub(digits);
    format!("{scaled:.fix$}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_give_the_converters_names() {
        let p = model_id_components("tiny-llama3", 140_296);
        assert_eq!(id_to_title(p.name.as_deref().unwrap()), "Tiny Llama3");
        assert_eq!((p.basename, p.size_label), (None, None));
        let p = model_id_components("TinyLlama-1.1B-Chat-v1.0", 1_100_048_384);
        assert_eq!(p.basename.as_deref(), Some("TinyLlama"));
        assert_eq!(p.size_label.as_deref(), Some("1.1B"));
        assert_eq!(p.finetune.as_deref(), Some("Chat"));
        assert_eq!(p.version.as_deref(), Some("v1.0"));
        let p = model_id_components("Qwen/Qwen2.5-0.5B-Instruct", 494_032_768);
        assert_eq!(p.organization.as_deref(), Some("Qwen"));
        assert_eq!(p.size_label.as_deref(), Some("0.5B"));
        assert_eq!(id_to_title("stablelm-2-zephyr"), "Stablelm 2 Zephyr");
    }

    #[test]
    fn size_labels_round_like_python() {
        assert_eq!(size_label(140_296), "140K");
        assert_eq!(size_label(205_120), "205K");
        assert_eq!(size_label(9_000), "9.0K");
        assert_eq!(size_label(1_100_048_384), "1.1B");
        assert_eq!(size_label(494_032_768), "494M");
    }
}
