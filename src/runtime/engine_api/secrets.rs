//! Keeping env values and build args out of every log, bollard's included.
//!
//! bollard logs (through the `log` crate) each request's URI and query at
//! `debug`/`trace` and its body at `trace` — build args travel in the
//! query of `POST /build`, env values in the body of `POST /containers/create`.
//! So the requests bollard builds carry **placeholders**
//! (`cldpd-secret-<uuid>`), registered here for the duration of the call,
//! and the client's request modifier swaps in the real values at the last
//! moment. The modifier runs after the URI was logged; a body it rewrites
//! is handed on as a stream, which bollard logs as `(stream)`, not its
//! bytes. No value is ever in a string bollard or cldpd logs.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use bollard::BollardRequest;
use http_body_util::{BodyExt, Either};

use crate::runtime::SecretValue;

/// Every placeholder starts with this.
const PREFIX: &str = "cldpd-secret-";

fn registry() -> &'static Mutex<HashMap<String, SecretValue>> {
    static REG: OnceLock<Mutex<HashMap<String, SecretValue>>> = OnceLock::new();
    REG.get_or_init(Default::default)
}

/// Placeholders registered for one request; dropped, they are forgotten.
#[derive(Debug, Default)]
pub(crate) struct Placeholders(Vec<String>);

impl Placeholders {
    /// A placeholder standing for `value` until `self` is dropped.
    pub(crate) fn add(&mut self, value: &SecretValue) -> String {
        let token = format!("{PREFIX}{}", uuid::Uuid::new_v4().simple());
        registry()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token.clone(), value.clone());
        self.0.push(token.clone());
        token
    }
}

impl Drop for Placeholders {
    fn drop(&mut self) {
        let mut reg = registry().lock().unwrap_or_else(PoisonError::into_inner);
        for token in &self.0 {
            reg.remove(token);
        }
    }
}

/// Replace every registered placeholder in `text`, each value encoded by
/// `encode`.
fn substitute(text: &str, encode: impl Fn(&str) -> String) -> Option<String> {
    if !text.contains(PREFIX) {
        return None;
    }
    let reg = registry().lock().unwrap_or_else(PoisonError::into_inner);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(PREFIX) {
        out.push_str(&rest[..at]);
        let token_len = PREFIX.len() + 32;
        let token = rest.get(at..at + token_len).unwrap_or(&rest[at..]);
        match reg.get(token) {
            Some(value) => {
                out.push_str(&encode(value.expose()));
                rest = &rest[at + token.len()..];
            }
            None => {
                out.push_str(PREFIX);
                rest = &rest[at + PREFIX.len()..];
            }
        }
    }
    out.push_str(rest);
    Some(out)
}

/// A value inside a JSON string (without the quotes).
fn json_escaped(value: &str) -> String {
    let quoted = serde_json::to_string(value).unwrap_or_default();
    quoted[1..quoted.len() - 1].to_string()
}

/// A JSON-escaped value, percent-encoded for a query string.
fn query_escaped(value: &str) -> String {
    json_escaped(value)
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The request modifier: real values in, placeholders out.
pub(crate) fn reveal(request: BollardRequest) -> BollardRequest {
    let (mut parts, body) = request.into_parts();
    // Placeholders only ever sit in the query (build args).
    if let Some(uri) = substitute(&parts.uri.to_string(), query_escaped) {
        match uri.parse() {
            Ok(uri) => parts.uri = uri,
            Err(e) => tracing::error!(error = %e, "cannot rebuild a request URI"),
        }
    }
    let body = match body {
        Either::Left(full) => {
            // A full body is ready at once.
            match futures_util::FutureExt::now_or_never(full.collect()) {
                Some(Ok(collected)) => {
                    let bytes = collected.to_bytes();
                    match std::str::from_utf8(&bytes)
                        .ok()
                        .and_then(|t| substitute(t, json_escaped))
                    {
                        Some(text) => {
                            let bytes = bytes::Bytes::from(text);
                            bollard::body_stream(futures_util::stream::once(async move { bytes }))
                        }
                        None => bollard::body_full(bytes),
                    }
                }
                _ => bollard::body_full(Default::default()),
            }
        }
        stream => stream,
    };
    BollardRequest::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_values_only_while_registered() {
        let mut p = Placeholders::default();
        let token = p.add(&SecretValue::new("s3\"cret &x"));
        let body = format!("{{\"Env\":[\"K={token}\"]}}");
        let got = substitute(&body, json_escaped).unwrap();
        assert_eq!(got, "{\"Env\":[\"K=s3\\\"cret &x\"]}");
        let query = format!("buildargs=%7B%22K%22%3A%22{token}%22%7D");
        let got = substitute(&query, query_escaped).unwrap();
        assert_eq!(got, "buildargs=%7B%22K%22%3A%22s3%5C%22cret%20%26x%22%7D");
        assert_eq!(substitute("no secrets", json_escaped), None);
        drop(p);
        assert_eq!(substitute(&body, json_escaped).unwrap(), body);
    }
}
