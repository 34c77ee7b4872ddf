//! The base images a pod's Dockerfile pulls: the `FROM` images that are
//! neither `scratch` nor an earlier stage, with `ARG` defaults and the
//! pod's `buildArgs` substituted (`cldpd doctor` checks that each exists
//! locally, or says that a build would pull it).
//!
//! ```
//! use std::collections::BTreeMap;
//! let dockerfile = "ARG NODE=20\nFROM node:${NODE}-slim AS build\nFROM build\nFROM scratch\n";
//! let args = BTreeMap::from([("NODE".to_string(), "22".to_string())]);
//! assert_eq!(cldpd::pod::base_images(dockerfile, &args), ["node:22-slim"]);
//! ```

use std::collections::BTreeMap;

/// The images `dockerfile`'s `FROM` lines pull, in order, without
/// duplicates. An image whose name still holds an unresolved variable is
/// left out (the build would say what it makes of it).
pub fn base_images(dockerfile: &str, build_args: &BTreeMap<String, String>) -> Vec<String> {
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    let mut stages: Vec<String> = Vec::new();
    let mut images: Vec<String> = Vec::new();
    let mut seen_from = false;
    for line in logical_lines(dockerfile) {
        let mut words = line.split_whitespace();
        let Some(instr) = words.next() else { continue };
        if instr.eq_ignore_ascii_case("ARG") && !seen_from {
            // Global ARGs (before the first FROM) are what FROM may use.
            for decl in words {
                let (name, default) = match decl.split_once('=') {
                    Some((n, d)) => (n, Some(d.trim_matches('"').to_string())),
                    None => (decl, None),
                };
                let value = build_args.get(name).cloned().or(default);
                if let Some(v) = value {
                    args.insert(name.to_string(), v);
                }
            }
        } else if instr.eq_ignore_ascii_case("FROM") {
            seen_from = true;
            let rest: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
            let Some(image) = rest.first() else { continue };
            let image = substitute(image, &args);
            let lower = image.to_ascii_lowercase();
            let earlier_stage = stages.contains(&lower);
            if let [_, as_kw, name] = rest[..] {
                if as_kw.eq_ignore_ascii_case("AS") {
                    stages.push(name.to_ascii_lowercase());
                }
            }
            if lower == "scratch" || earlier_stage || image.contains('$') || image.is_empty() {
                continue;
            }
            if !images.contains(&image) {
                images.push(image);
            }
        }
    }
    images
}

/// Lines with `\` continuations joined, comments and blank lines dropped.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(line);
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out
}

/// `$NAME`, `${NAME}` and `${NAME:-default}` replaced from `args`.
fn substitute(word: &str, args: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = word;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (expr, tail) = if let Some(body) = after.strip_prefix('{') {
            match body.find('}') {
                Some(end) => (&body[..end], &body[end + 1..]),
                None => {
                    out.push_str(&rest[at..]);
                    return out;
                }
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        match args.get(name).map(String::as_str).or(default) {
            Some(v) => out.push_str(v),
            None => {
                out.push('$');
                out.push_str(name);
            }
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    #[test]
    fn stages_scratch_and_duplicates_are_not_pulled() {
        let df = "# syntax\nFROM --platform=linux/amd64 golang:1.22 AS build\nRUN go build\nFROM build AS test\nFROM debian:12\nCOPY --from=build /x /x\nFROM golang:1.22\nFROM scratch\n";
        assert_eq!(base_images(df, &none()), ["golang:1.22", "debian:12"]);
    }

    #[test]
    fn args_resolve_from_build_args_then_defaults() {
        let df =
            "ARG BASE=node\nARG TAG\nFROM ${BASE}:${TAG:-20}-slim\nARG LATE=x\nFROM $BASE:$LATE\n";
        assert_eq!(base_images(df, &none()), ["node:20-slim"]);
        let args = BTreeMap::from([("TAG".to_string(), "22".to_string())]);
        assert_eq!(base_images(df, &args), ["node:22-slim"]);
    }

    #[test]
    fn continuations_and_lowercase_instructions() {
        let df = "from \\\n  alpine:3.20 \\\n  as base\nrun true\n";
        assert_eq!(base_images(df, &none()), ["alpine:3.20"]);
        assert!(base_images("", &none()).is_empty());
    }
}
