//! A scripted model server: answers the Anthropic Messages API on loopback
//! with the turns of a [`Script`], so that the real Claude Code runs a real
//! agent loop offline and for free — in cldpd's tests, and for users who
//! test their pods and templates (`cldpd model-server --script FILE`).
//!
//! ```no_run
//! use cldpd::model_server::{ModelServer, Script, Turn};
//! let server = ModelServer::start(
//!     Script::new([Turn::bash("echo hi > out.txt"), Turn::text("Done.")]),
//!     0,
//! ).unwrap();
//! // Run Claude Code with ANTHROPIC_BASE_URL=<server.url()>, any
//! // ANTHROPIC_API_KEY and CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1,
//! // in a container on the host network; then look at what it sent:
//! for r in server.requests() {
//!     println!("{} {} turn {:?}", r.method, r.path, r.turn);
//! }
//! ```
//!
//! What it speaks: `POST /v1/messages` (query such as `?beta=true`
//! ignored) with `stream: true` gets server-sent events (`message_start`,
//! `content_block_start` / `_delta` / `_stop` with `text_delta` or
//! `input_json_delta`, `message_delta` with the stop reason, `message_stop`);
//! without `stream` it gets one JSON message. `POST
//! /v1/messages/count_tokens` gets an estimate (bytes / 4). Anything else is
//! logged (tracing, `warn`) and answered 404 with an API error body; `HEAD`
//! and `GET /` answer 200 empty (reachability checks). Every request is
//! recorded ([`ModelServer::requests`]) with its body, so tests can check
//! what the agent sent. The `x-api-key` and `authorization` headers are
//! never recorded or logged.
//!
//! It binds only loopback addresses: it has no authentication and runs
//! whatever tool calls its script says, so it must not be reachable from
//! elsewhere.

mod script;
mod sse;

pub use script::{Block, HttpError, Script, Turn, Usage};

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};

use crate::error::{Error, Result};

/// The header Claude Code names its conversation in.
const CONVERSATION_HEADER: &str = "x-claude-code-session-id";

/// One request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `POST`, `GET`, …
    pub method: String,
    /// Path and query (`/v1/messages?beta=true`).
    pub path: String,
    /// The conversation (Claude Code's session id header), when given.
    pub conversation: Option<String>,
    /// The request body, decoded as UTF-8 (lossily).
    pub body: String,
    /// The index of the script turn it was answered with, if any.
    pub turn: Option<usize>,
    /// The status answered (0 while the answer is being made).
    pub status: u16,
}

impl RecordedRequest {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// True for a Messages API call (`POST /v1/messages`).
    pub fn is_messages(&self) -> bool {
        self.method == "POST" && path_only(&self.path) == "/v1/messages"
    }
}

fn path_only(p: &str) -> &str {
    p.split('?').next().unwrap_or(p)
}

/// Where each conversation is in the script.
#[derive(Debug, Default)]
struct Cursor {
    turn: usize,
    served: u32,
}

#[derive(Debug)]
struct Shared {
    script: Script,
    cursors: Mutex<HashMap<String, Cursor>>,
    requests: Mutex<Vec<RecordedRequest>>,
}

impl Shared {
    /// The next turn of `conversation` (advancing its cursor), or `None`
    /// once the script is used up.
    fn next_turn(&self, conversation: &str) -> Option<(usize, Turn)> {
        let mut cursors = self.cursors.lock().unwrap_or_else(|e| e.into_inner());
        let key = if self.script.per_conversation {
            conversation
        } else {
            ""
        };
        let c = cursors.entry(key.to_string()).or_default();
        let turn = self.script.turns.get(c.turn)?.clone();
        let index = c.turn;
        c.served += 1;
        let times = turn.times.unwrap_or(1);
        if times != 0 && c.served >= times {
            c.turn += 1;
            c.served = 0;
        }
        Some((index, turn))
    }

    /// Record a request as it arrives; returns its index.
    fn record(&self, r: RecordedRequest) -> usize {
        let mut reqs = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        reqs.push(r);
        reqs.len() - 1
    }

    /// Fill in how a recorded request was answered.
    fn answered(&self, index: usize, turn: Option<usize>, status: u16) {
        let mut reqs = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = reqs.get_mut(index) {
            r.turn = turn;
            r.status = status;
        }
    }
}

/// A running scripted model server; stops when dropped. See the [module
/// docs](self).
#[derive(Debug)]
pub struct ModelServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ModelServer {
    /// Serve `script` on `127.0.0.1:port` (0 = any free port), on a thread
    /// of its own.
    pub fn start(script: Script, port: u16) -> Result<ModelServer> {
        ModelServer::start_on(
            script,
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        )
    }

    /// Serve `script` on `addr`, which must be a loopback address
    /// ([`Error::InvalidOption`] otherwise).
    pub fn start_on(script: Script, addr: SocketAddr) -> Result<ModelServer> {
        if !addr.ip().is_loopback() {
            return Err(Error::InvalidOption {
                option: "model server address".into(),
                message: format!(
                    "{} is not a loopback address; the scripted model server has no authentication and only listens on 127.0.0.1 or ::1",
                    addr.ip()
                ),
            });
        }
        let listener = std::net::TcpListener::bind(addr).map_err(|e| Error::InvalidOption {
            option: "model server address".into(),
            message: format!("cannot listen on {addr}: {e}"),
        })?;
        listener.set_nonblocking(true).map_err(|e| Error::Io {
            context: "model server socket".into(),
            source: Arc::new(e),
        })?;
        let addr = listener.local_addr().map_err(|e| Error::Io {
            context: "model server socket".into(),
            source: Arc::new(e),
        })?;
        let shared = Arc::new(Shared {
            script,
            cursors: Mutex::default(),
            requests: Mutex::default(),
        });
        let (tx, rx) = tokio::sync::oneshot::channel();
        let serving = shared.clone();
        let thread = std::thread::Builder::new()
            .name("cldpd-model-server".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "model server: no runtime");
                        return;
                    }
                };
                rt.block_on(serve(listener, serving, rx));
            })
            .map_err(|e| Error::Io {
                context: "model server thread".into(),
                source: Arc::new(e),
            })?;
        tracing::info!(%addr, "model server listening");
        Ok(ModelServer {
            addr,
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to give the agent (`ANTHROPIC_BASE_URL`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The Messages API calls received so far.
    pub fn message_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(RecordedRequest::is_messages)
            .collect()
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "model server: cannot use its socket");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _peer)) = accepted else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, shared.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", content_type.parse().expect("valid header"));
    r
}

fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    full(status, "application/json", v.to_string())
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> std::result::Result<Response<Body>, Infallible> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "/".into());
    let conversation = req
        .headers()
        .get(CONVERSATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let body_text = String::from_utf8_lossy(&body).into_owned();
    // Recorded on arrival (status 0 until answered), so that a test sees a
    // request the script answers slowly.
    let index = shared.record(RecordedRequest {
        method: method.clone(),
        path: path.clone(),
        conversation: conversation.clone(),
        body: body_text,
        turn: None,
        status: 0,
    });
    let mut turn = None;
    let response = route(
        &method,
        &path,
        &body,
        conversation.as_deref(),
        &shared,
        &mut turn,
    )
    .await;
    let status = response.status().as_u16();
    tracing::info!(%method, %path, status, ?turn, "model server request");
    shared.answered(index, turn, status);
    Ok(response)
}

async fn route(
    method: &str,
    path: &str,
    body: &[u8],
    conversation: Option<&str>,
    shared: &Shared,
    served: &mut Option<usize>,
) -> Response<Body> {
    match (method, path_only(path)) {
        ("POST", "/v1/messages") => {}
        ("POST", "/v1/messages/count_tokens") => {
            return json_response(
                StatusCode::OK,
                &serde_json::json!({"input_tokens": body.len() / 4 + 1}),
            )
        }
        ("HEAD", _) | ("GET", "/") => return full(StatusCode::OK, "text/plain", Bytes::new()),
        _ => {
            tracing::warn!(method, path, "model server: unknown request; answering 404");
            return json_response(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"type": "error", "error": {"type": "not_found_error",
                    "message": format!("the scripted model server does not serve {method} {path}")}}),
            );
        }
    }
    let request: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"type": "error", "error": {"type": "invalid_request_error",
                    "message": format!("the body is not JSON: {e}")}}),
            )
        }
    };
    let model = shared
        .script
        .model
        .clone()
        .or_else(|| request["model"].as_str().map(str::to_string))
        .unwrap_or_else(|| "claude-scripted".into());
    let streaming = request["stream"].as_bool().unwrap_or(false);
    let (index, turn) = match shared.next_turn(conversation.unwrap_or("")) {
        Some((i, t)) => (Some(i), t),
        None => {
            tracing::info!(
                conversation,
                "model server: the script is used up for this conversation; answering end_turn"
            );
            (
                None,
                Turn::text("(the scripted model server has no more turns)"),
            )
        }
    };
    *served = index;
    if turn.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(turn.delay_ms)).await;
    }
    if let Some(e) = &turn.error {
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = json_response(status, &sse::error_body(e));
        if let Some(secs) = e.retry_after {
            r.headers_mut()
                .insert("retry-after", secs.to_string().parse().expect("digits"));
        }
        return r;
    }
    if !streaming {
        return json_response(StatusCode::OK, &sse::message(&turn, &model));
    }
    let mut events = sse::stream_events(&turn, &model);
    let cut = turn.cut_after.filter(|n| *n < events.len());
    if let Some(n) = cut {
        events.truncate(n);
    }
    let gap = Duration::from_millis(turn.event_delay_ms);
    let frames = futures_util::stream::iter(events.into_iter().enumerate())
        .then(move |(i, ev)| async move {
            if i > 0 && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            Ok::<_, std::io::Error>(Frame::data(Bytes::from(ev)))
        })
        .chain(futures_util::stream::iter(cut).then(|_| async {
            // Let the events sent so far reach the client before the
            // connection is cut (hyper drops unflushed data on a body error).
            tokio::time::sleep(Duration::from_millis(100)).await;
            Err(std::io::Error::other("scripted stream cut"))
        }));
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().expect("valid"));
    r.headers_mut()
        .insert("cache-control", "no-cache".parse().expect("valid"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A raw HTTP/1.1 request over a std socket; the whole answer.
    fn http(addr: SocketAddr, head: &str, body: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "{head}\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn post(addr: SocketAddr, conversation: &str, body: &str) -> String {
        http(
            addr,
            &format!("POST /v1/messages?beta=true HTTP/1.1\r\nX-Claude-Code-Session-Id: {conversation}\r\nx-api-key: sk-secret"),
            body,
        )
    }

    #[test]
    fn refuses_addresses_other_than_loopback() {
        let err =
            ModelServer::start_on(Script::default(), "0.0.0.0:0".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        assert!(
            ModelServer::start_on(Script::default(), "[::1]:0".parse().unwrap()).is_ok()
                || std::net::TcpListener::bind("[::1]:0").is_err()
        );
    }

    #[test]
    fn each_conversation_walks_the_script_and_requests_are_recorded() {
        let server = ModelServer::start(
            Script::new([
                Turn::bash("ls"),
                Turn::error(529).times(2),
                Turn::text("done"),
            ]),
            0,
        )
        .unwrap();
        let a = server.addr();
        let body = r#"{"model":"m","stream":true,"messages":[]}"#;
        let first = post(a, "c1", body);
        assert!(first.starts_with("HTTP/1.1 200"), "{first}");
        assert!(first.contains("text/event-stream"));
        assert!(first.contains("\"name\":\"Bash\""), "{first}");
        assert!(first.contains("event: message_stop"));
        // Another conversation starts at the top.
        assert!(post(a, "c2", body).contains("\"name\":\"Bash\""));
        let e1 = post(a, "c1", body);
        assert!(e1.starts_with("HTTP/1.1 529"), "{e1}");
        assert!(e1.contains("overloaded_error"));
        assert!(post(a, "c1", body).starts_with("HTTP/1.1 529"));
        let done = post(a, "c1", body);
        assert!(done.contains("\"text\":\"done\""), "{done}");
        assert!(done.contains("end_turn"));
        // Used up: a polite end.
        assert!(post(a, "c1", body).contains("no more turns"));
        let reqs = server.message_requests();
        assert_eq!(reqs.len(), 6);
        assert_eq!(
            reqs.iter().map(|r| r.turn).collect::<Vec<_>>(),
            [Some(0), Some(0), Some(1), Some(1), Some(2), None]
        );
        assert_eq!(reqs[2].status, 529);
        assert_eq!(reqs[0].conversation.as_deref(), Some("c1"));
        assert_eq!(reqs[0].json()["model"], "m");
        assert!(!format!("{reqs:?}").contains("sk-secret"));
    }

    #[test]
    fn retry_after_cuts_non_streamed_and_unknown_requests() {
        let mut rate = Turn::error(429);
        rate.error.as_mut().unwrap().retry_after = Some(3);
        let cut = Turn {
            cut_after: Some(2),
            ..Turn::text("never complete")
        };
        let server = ModelServer::start(Script::new([rate, cut, Turn::text("plain")]), 0).unwrap();
        let a = server.addr();
        let r = post(a, "c", r#"{"stream":true}"#);
        assert!(r.starts_with("HTTP/1.1 429"), "{r}");
        assert!(r.to_ascii_lowercase().contains("retry-after: 3"), "{r}");
        let r = post(a, "c", r#"{"stream":true}"#);
        assert!(r.contains("content_block_start"), "{r}");
        assert!(!r.contains("message_stop"), "{r}");
        assert!(
            !r.ends_with("0\r\n\r\n"),
            "the chunked body must not end cleanly: {r}"
        );
        let r = post(a, "c", r#"{"stream":false}"#);
        assert!(
            r.contains("application/json") && r.contains("\"text\":\"plain\""),
            "{r}"
        );
        let r = http(a, "GET /v1/models HTTP/1.1", "");
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        let r = post(a, "c", "not json");
        assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    }
}
