//! Naming the field behind a `pod.json` error, and "did you mean"
//! suggestions for misspelled names.
//!
//! [`serde_path_to_error`] gives the path of the value serde stopped at
//! (`mounts[1].readOnly`, `env.TOKEN`); what that field takes comes from
//! our own table ([`expectation`]) and what it got from the parsed JSON, so
//! no message is built by reading serde's English, and no `env` or
//! `buildArgs` value is ever echoed.

use serde_json::{Map, Value};
use serde_path_to_error::Segment;

use super::*;

/// One step of the path to a value in `pod.json`.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

impl Step {
    fn key(&self) -> Option<&str> {
        match self {
            Step::Key(k) => Some(k),
            Step::Index(_) => None,
        }
    }
}

/// Parse a syntactically valid JSON object (`root` is the same text parsed
/// as a [`Value`]) into a [`PodConfig`]; an error is `(field, message)`.
/// The message always has the line and column.
pub(super) fn deserialize(
    text: &str,
    root: &Map<String, Value>,
) -> std::result::Result<PodConfig, (Option<String>, String)> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| describe_data_error(text, root, &e))
}

/// Turn a typed-parse error on a syntactically valid object into `(field,
/// message)`.
fn describe_data_error(
    text: &str,
    root: &Map<String, Value>,
    err: &serde_path_to_error::Error<serde_json::Error>,
) -> (Option<String>, String) {
    let inner = err.inner();
    let at = format!("line {} column {}", inner.line(), inner.column());
    let offset = byte_offset(text, inner.line(), inner.column());
    let Some(path) = steps(err.path()) else {
        return fallback(None, inner, &at);
    };
    let field = field_name(&path);
    match path.as_slice() {
        // The whole object failed after its fields parsed: a duplicate field.
        [] => match pick_key(text, offset, &keys(root)) {
            Some(name) => (Some(name.to_string()), twice(name, &at)),
            None => fallback(None, inner, &at),
        },
        [Step::Key(name)] if !POD_CONFIG_FIELDS.contains(&name.as_str()) => (
            Some(field),
            unknown_field(name, POD_CONFIG_FIELDS, None, &at),
        ),
        [Step::Key(m), Step::Index(_), last]
            if m == "mounts" && last.key().is_some_and(|k| !MOUNT_FIELDS.contains(&k)) =>
        {
            let name = last.key().unwrap_or_default();
            let otherwise = "a mount has `source`, `target` and `readOnly`";
            (
                Some(field),
                unknown_field(name, MOUNT_FIELDS, Some(otherwise), &at),
            )
        }
        [Step::Key(m), Step::Index(i)] if m == "mounts" => match lookup(root, &path) {
            Some(Value::Object(mount)) => {
                if let Some(missing) = ["source", "target"]
                    .into_iter()
                    .find(|k| !mount.contains_key(*k))
                {
                    let field = format!("mounts[{i}].{missing}");
                    let message = format!(
                        "`{field}` is missing at {at}: every mount needs `source` and `target`"
                    );
                    return (Some(field), message);
                }
                match pick_key(text, offset, &keys(mount)) {
                    Some(name) => (Some(format!("mounts[{i}].{name}")), twice(name, &at)),
                    None => fallback(Some(field), inner, &at),
                }
            }
            Some(value) => wrong_value(field, &path, value, &at),
            None => fallback(Some(field), inner, &at),
        },
        _ => match lookup(root, &path) {
            Some(value) => wrong_value(field, &path, value, &at),
            None => fallback(Some(field), inner, &at),
        },
    }
}

/// A value of the wrong type or out of range: name the field, what it
/// takes and what it got.
fn wrong_value(field: String, path: &[Step], value: &Value, at: &str) -> (Option<String>, String) {
    if field == "restart" {
        if let Value::String(variant) = value {
            let choices = RESTART_VALUES.join(", ");
            let message = match suggest(variant, RESTART_VALUES) {
                Some(s) => format!(
                    "field `restart`: unknown value `{variant}` (did you mean `{s}`?); it is one of {choices} ({at})"
                ),
                None => {
                    format!("field `restart`: unknown value `{variant}`; it is one of {choices} ({at})")
                }
            };
            return (Some(field), message);
        }
    }
    let expected = expectation(path).unwrap_or("another kind of value");
    let secret = matches!(path.first(), Some(Step::Key(k)) if k == "env" || k == "buildArgs");
    let got = match value {
        // A number in a non-secret field is shown: `-1`, `1.5`, `5000000000`.
        Value::Number(n) if !secret => format!("`{n}`"),
        other => kind_of(other).to_string(),
    };
    (
        Some(field.clone()),
        format!("field `{field}` must be {expected}, got {got} ({at})"),
    )
}

/// What the field at `path` takes, in words.
fn expectation(path: &[Step]) -> Option<&'static str> {
    let top = path.first()?.key()?;
    Some(match (path.len(), top) {
        (1, "image") => "a string (an image tag such as \"my/pod:1\")",
        (1, "workdir") => "a string (an absolute container path)",
        (1, "memory") => "a string such as \"512m\" or \"2g\"",
        (1, "env" | "buildArgs") => "an object of NAME: \"value\" strings",
        (1, "inheritEnv") => "an array of variable names (strings)",
        (1, "mounts") => {
            "an array of mounts, each {\"source\": \"...\", \"target\": \"...\", \"readOnly\": true/false}"
        }
        (1, "agentCommand") => "an array of strings, the program first, e.g. [\"claude\"]",
        (1, "stopGraceSecs" | "withinSecs" | "timeoutSecs" | "idleTimeoutSecs") => {
            "a number of seconds"
        }
        (1, "cpus") => "a number, e.g. 1.5",
        (1, "maxRestarts" | "pidsLimit") => "a whole number from 0 to 4294967295",
        (1, "backoffMs" | "backoffMaxMs") => "a whole number of milliseconds, 0 or more",
        (1, "restart") => "one of \"never\", \"on-failure\", \"always\"",
        (2, "env" | "buildArgs" | "inheritEnv" | "agentCommand") => "a string",
        (2, "mounts") => {
            "a mount object {\"source\": \"...\", \"target\": \"...\", \"readOnly\": true/false}"
        }
        (3, "mounts") => match path[2].key()? {
            "source" | "target" => "a string",
            "readOnly" => "true or false",
            _ => return None,
        },
        _ => return None,
    })
}

/// serde's own message, for a shape [`describe_data_error`] does not know
/// (not expected to happen; never for `env` or `buildArgs`, whose values
/// may be secrets).
fn fallback(
    field: Option<String>,
    inner: &serde_json::Error,
    at: &str,
) -> (Option<String>, String) {
    let secret = field
        .as_deref()
        .is_some_and(|f| f.starts_with("env") || f.starts_with("buildArgs"));
    let message = match (&field, secret) {
        (Some(f), true) => format!("field `{f}` has a value of the wrong kind ({at})"),
        (Some(f), false) => format!("field `{f}`: {inner}"),
        (None, _) => inner.to_string(),
    };
    (field, message)
}

fn unknown_field(name: &str, known: &[&str], otherwise: Option<&str>, at: &str) -> String {
    match (suggest(name, known), otherwise) {
        (Some(s), _) => format!("unknown field `{name}` (did you mean `{s}`?) at {at}"),
        (None, Some(otherwise)) => format!("unknown field `{name}` at {at}; {otherwise}"),
        (None, None) => format!("unknown field `{name}` at {at}"),
    }
}

fn twice(name: &str, at: &str) -> String {
    format!("field `{name}` appears twice (the second time at {at}); keep one")
}

/// Our steps for a serde path; `None` when a segment is of a kind pod.json
/// does not have.
fn steps(path: &serde_path_to_error::Path) -> Option<Vec<Step>> {
    path.iter()
        .map(|segment| match segment {
            Segment::Map { key } => Some(Step::Key(key.clone())),
            Segment::Seq { index } => Some(Step::Index(*index)),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

/// `mounts[1].readOnly`, `env.TOKEN`.
fn field_name(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) if out.is_empty() => out.push_str(k),
            Step::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn lookup<'v>(root: &'v Map<String, Value>, path: &[Step]) -> Option<&'v Value> {
    let (first, rest) = path.split_first()?;
    let Step::Key(k) = first else { return None };
    let mut value = root.get(k)?;
    for step in rest {
        value = match (step, value) {
            (Step::Key(k), Value::Object(map)) => map.get(k)?,
            (Step::Index(i), Value::Array(items)) => items.get(*i)?,
            _ => return None,
        };
    }
    Some(value)
}

fn keys(map: &Map<String, Value>) -> Vec<&str> {
    map.keys().map(String::as_str).collect()
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
/// (optimal string alignment: transpositions count as one); or one is a prefix of the other
/// (`timeout` → `timeoutSecs`, `memoryLimit` → `memory`).
pub(super) fn suggest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    let normalize = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let u = normalize(unknown);
    if u.is_empty() {
        return None;
    }
    let normalized: Vec<(String, &'a str)> = known.iter().map(|k| (normalize(k), *k)).collect();
    if let Some((_, k)) = normalized.iter().find(|(n, _)| *n == u) {
        return Some(k);
    }
    let limit = match u.chars().count() {
        0..=3 => 1,
        4..=7 => 2,
        _ => 3,
    };
    let best = normalized
        .iter()
        .map(|(n, k)| (strsim::osa_distance(&u, n), *k))
        .min_by_key(|(d, _)| *d);
    if let Some((d, k)) = best {
        if d <= limit {
            return Some(k);
        }
    }
    if u.chars().count() >= 4 {
        if let Some((_, k)) = normalized.iter().find(|(n, _)| n.starts_with(u.as_str())) {
            return Some(k);
        }
    }
    normalized
        .iter()
        .filter(|(n, _)| n.chars().count() >= 3 && u.starts_with(n.as_str()))
        .max_by_key(|(n, _)| n.chars().count())
        .map(|(_, k)| *k)
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
}
