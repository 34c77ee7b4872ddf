//! Naming the field behind a serde error on `pod.json`, and "did you
//! mean" suggestions for misspelled names.

use serde_json::{Map, Value};

use super::*;

/// Turn a serde error on a syntactically valid object into `(field,
/// message)`. The message always has the line and column and never echoes
/// an `env` or `buildArgs` value.
pub(super) fn describe_data_error(
    text: &str,
    root: &Map<String, Value>,
    err: &serde_json::Error,
) -> (Option<String>, String) {
    let full = err.to_string();
    let at = format!("line {} column {}", err.line(), err.column());
    let inner = full
        .strip_suffix(&format!(" at {at}"))
        .unwrap_or(&full)
        .to_string();
    let offset = byte_offset(text, err.line(), err.column());

    if let Some(name) = backticked_after(&inner, "unknown field `") {
        // serde lists what it expected; a mount's list names `target`.
        let in_mount = inner.contains("`target`");
        let (field, known) = if in_mount {
            let field = mounts_of(root)
                .iter()
                .enumerate()
                .find(|(_, m)| m.as_object().is_some_and(|o| o.contains_key(name)))
                .map(|(i, _)| format!("mounts[{i}].{name}"))
                .unwrap_or_else(|| format!("mounts[].{name}"));
            (field, MOUNT_FIELDS)
        } else {
            (name.to_string(), POD_CONFIG_FIELDS)
        };
        let message = match suggest(name, known) {
            Some(s) => format!("unknown field `{name}` (did you mean `{s}`?) at {at}"),
            None if in_mount => format!(
                "unknown field `{name}` at {at}; a mount has `source`, `target` and `readOnly`"
            ),
            None => format!("unknown field `{name}` at {at}"),
        };
        return (Some(field), message);
    }
    if let Some(name) = backticked_after(&inner, "duplicate field `") {
        return (
            Some(name.to_string()),
            format!("field `{name}` appears twice (the second time at {at}); keep one"),
        );
    }
    if let Some(name) = backticked_after(&inner, "missing field `") {
        // Only mounts have required fields.
        let field = mounts_of(root)
            .iter()
            .enumerate()
            .find(|(_, m)| m.as_object().is_some_and(|o| !o.contains_key(name)))
            .map(|(i, _)| format!("mounts[{i}].{name}"))
            .unwrap_or_else(|| name.to_string());
        return (
            Some(field.clone()),
            format!("`{field}` is missing at {at}: every mount needs `source` and `target`"),
        );
    }

    let Some((field, value)) = locate_bad_value(text, root, offset) else {
        return (None, format!("{inner} at {at}"));
    };
    let top = field.split(['.', '[']).next().unwrap_or_default();
    let detail = if top == "env" || top == "buildArgs" {
        // serde's message would quote the value, which may be a secret.
        if field == top {
            format!(
                "must be an object of NAME: \"value\" strings, not {}",
                kind_of(value)
            )
        } else {
            format!("the value must be a string, not {}", kind_of(value))
        }
    } else if let Some(variant) = backticked_after(&inner, "unknown variant `") {
        let choices = RESTART_VALUES.join(", ");
        match suggest(variant, RESTART_VALUES) {
            Some(s) => {
                format!("unknown value `{variant}` (did you mean `{s}`?); it is one of {choices}")
            }
            None => format!("unknown value `{variant}`; it is one of {choices}"),
        }
    } else {
        inner
    };
    (Some(field.clone()), format!("`{field}`: {detail} at {at}"))
}

/// The text between `prefix` and the next backtick.
fn backticked_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split('`').next()
}

fn mounts_of(root: &Map<String, Value>) -> &[Value] {
    root.get("mounts")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Byte offset in `text` of serde's 1-based line and column (clamped).
fn byte_offset(text: &str, line: usize, column: usize) -> usize {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    (line_start + column).min(text.len())
}

/// Offset of the last `"key":` before `offset`.
fn key_position_before(text: &str, key: &str, offset: usize) -> Option<usize> {
    let needle = format!("\"{key}\"");
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end]
        .match_indices(&needle)
        .filter(|(i, _)| text[i + needle.len()..].trim_start().starts_with(':'))
        .map(|(i, _)| i)
        .last()
}

/// Of several candidate keys, the one serde stopped in: the one written
/// last before the error position (serde reads in document order; the map
/// we hold is sorted by name).
fn pick_key<'a>(text: &str, offset: usize, keys: &[&'a str]) -> Option<&'a str> {
    if keys.len() <= 1 {
        return keys.first().copied();
    }
    keys.iter()
        .max_by_key(|k| key_position_before(text, k, offset))
        .copied()
}

/// The field whose value made deserialisation fail, and that value: the
/// top-level field, refined to the map entry, array element or mount field.
fn locate_bad_value<'v>(
    text: &str,
    root: &'v Map<String, Value>,
    offset: usize,
) -> Option<(String, &'v Value)> {
    let failing: Vec<&str> = root
        .iter()
        .filter(|(k, v)| POD_CONFIG_FIELDS.contains(&k.as_str()) && !top_field_ok(k, v))
        .map(|(k, _)| k.as_str())
        .collect();
    let key = pick_key(text, offset, &failing)?;
    let value = &root[key];
    let refined = match (key, value) {
        ("env" | "buildArgs", Value::Object(map)) => {
            let bad: Vec<&str> = map
                .iter()
                .filter(|(_, v)| !v.is_string())
                .map(|(k, _)| k.as_str())
                .collect();
            pick_key(text, offset, &bad).map(|k| (format!("{key}.{k}"), &map[k]))
        }
        ("inheritEnv" | "agentCommand", Value::Array(items)) => items
            .iter()
            .enumerate()
            .find(|(_, v)| !v.is_string())
            .map(|(i, v)| (format!("{key}[{i}]"), v)),
        ("mounts", Value::Array(items)) => items
            .iter()
            .enumerate()
            .find(|(_, m)| serde_json::from_value::<Mount>((*m).clone()).is_err())
            .map(|(i, m)| match m {
                Value::Object(fields) => {
                    let bad: Vec<&str> = fields
                        .iter()
                        .filter(|(k, v)| {
                            MOUNT_FIELDS.contains(&k.as_str()) && !mount_field_ok(k, v)
                        })
                        .map(|(k, _)| k.as_str())
                        .collect();
                    match pick_key(text, offset, &bad) {
                        Some(k) => (format!("mounts[{i}].{k}"), &fields[k]),
                        None => (format!("mounts[{i}]"), m),
                    }
                }
                other => (format!("mounts[{i}]"), other),
            }),
        _ => None,
    };
    Some(refined.unwrap_or_else(|| (key.to_string(), value)))
}

fn top_field_ok(key: &str, value: &Value) -> bool {
    let mut single = Map::new();
    single.insert(key.to_string(), value.clone());
    serde_json::from_value::<PodConfig>(Value::Object(single)).is_ok()
}

fn mount_field_ok(key: &str, value: &Value) -> bool {
    let mut mount = Map::new();
    mount.insert("source".into(), Value::from("/x"));
    mount.insert("target".into(), Value::from("/x"));
    mount.insert(key.to_string(), value.clone());
    serde_json::from_value::<Mount>(Value::Object(mount)).is_ok()
}

pub(super) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The known name a misspelled one most likely meant: same letters ignoring
/// case, `_` and `-` (`build_args`, `readonly`); at most one or two edits
/// (transpositions count as one); or one is a prefix of the other
/// (`timeout` → `timeoutSecs`, `memoryLimit` → `memory`).
pub(super) fn suggest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    let normalize = |s: &str| -> Vec<char> {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let u = normalize(unknown);
    if u.is_empty() {
        return None;
    }
    let normalized: Vec<(Vec<char>, &'a str)> = known.iter().map(|k| (normalize(k), *k)).collect();
    if let Some((_, k)) = normalized.iter().find(|(n, _)| *n == u) {
        return Some(k);
    }
    let limit = match u.len() {
        0..=3 => 1,
        4..=7 => 2,
        _ => 3,
    };
    let best = normalized
        .iter()
        .map(|(n, k)| (edit_distance(&u, n), *k))
        .min_by_key(|(d, _)| *d);
    if let Some((d, k)) = best {
        if d <= limit {
            return Some(k);
        }
    }
    if u.len() >= 4 {
        if let Some((_, k)) = normalized.iter().find(|(n, _)| n.starts_with(&u)) {
            return Some(k);
        }
    }
    normalized
        .iter()
        .filter(|(n, _)| n.len() >= 3 && u.starts_with(n))
        .max_by_key(|(n, _)| n.len())
        .map(|(_, k)| *k)
}

/// Optimal-string-alignment distance (Levenshtein plus adjacent swaps).
pub(super) fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let cases = [
            ("imgae", Some("image")),
            ("image", Some("image")),
            ("IMAGE", Some("image")),
            ("en", Some("env")),
            ("enviroment", Some("env")),
            ("environment", Some("env")),
            ("cpu", Some("cpus")),
            ("mount", Some("mounts")),
            ("workDir", Some("workdir")),
            ("working_dir", Some("workdir")),
            ("timeout", Some("timeoutSecs")),
            ("memoryLimit", Some("memory")),
            ("maxRestart", Some("maxRestarts")),
            ("xyz", None),
            ("volumes", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(suggest(input, POD_CONFIG_FIELDS), want, "{input}");
        }
        assert_eq!(suggest("sorce", MOUNT_FIELDS), Some("source"));
        assert_eq!(suggest("read_only", MOUNT_FIELDS), Some("readOnly"));
        assert_eq!(suggest("always-on", RESTART_VALUES), Some("always"));
    }

    #[test]
    fn edit_distance_counts_swaps_as_one() {
        let d = |a: &str, b: &str| {
            edit_distance(
                &a.chars().collect::<Vec<_>>(),
                &b.chars().collect::<Vec<_>>(),
            )
        };
        assert_eq!(d("imgae", "image"), 1);
        assert_eq!(d("", "abc"), 3);
        assert_eq!(d("kitten", "sitting"), 3);
        assert_eq!(d("same", "same"), 0);
    }
}
