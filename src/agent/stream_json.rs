//! Claude Code's `--output-format stream-json --verbose` output, one JSON
//! object a line, turned into typed [`EventKind`]s.
//!
//! | line | events |
//! |---|---|
//! | `{"type":"system","subtype":"init",…}` | `agent_init` |
//! | `{"type":"assistant","message":{"content":[…]}}` | per block: `agent_text` (text), `tool_use` (tool_use); `thinking` blocks none |
//! | `{"type":"user","message":{"content":[{"type":"tool_result",…}]}}` | per result: `tool_result` (id, is_error, size, first line) |
//! | `{"type":"result",…}` | `agent_result` |
//! | `{"type":"user","isReplay":true,…}` (a prompt echoed, `--replay-user-messages`) | `agent_prompt` |
//! | `{"type":"command_lifecycle","command_uuid":…,"state":…}` (a prompt's turn `queued`, `started`, `completed`) | `agent_turn` |
//! | `{"type":"system","subtype":"api_retry",…}` (Claude Code retries an API error) | `agent_api_error` with `retry_in_ms`, `attempt` |
//! | an `assistant` message with an `error` (the API call failed for good) | its `agent_text`, then `agent_api_error` |
//! | `{"type":"rate_limit_event","rate_limit_info":{"status":"rejected",…}}` | `agent_api_error` (`rate_limited`) |
//! | any other JSON object with a `type` (an allowed `rate_limit_event`, `system/compact_boundary`, …) | `agent_unknown` |
//! | not a JSON object | none (the line is an `output` event like any other) |
//!
//! The parser never holds more than one line: a line the runtime split at
//! its line cap (`partial` output events) is put back together up to
//! [`MAX_LINE`] bytes; a longer one is left as raw output only. Big
//! contents are summarised, not copied: a tool result keeps its size and
//! first line, inputs and texts are cut at [`MAX_TEXT`] bytes.

use serde_json::Value;

use crate::event::{AgentApiError, AgentInit, AgentResult, AgentUsage, EventKind, ToolUse, Usd};

/// The text blocks of a content array, joined.
fn blocks_text(content: &Value) -> String {
    content
        .as_array()
        .map(|blocks| {
            blocks
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join("")
        })
        .unwrap_or_default()
}

/// Longest stream-json line put back together from split output (16 MiB).
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// Longest text kept in an event (agent text, result text, each string of
/// a tool's input); longer ones end with `…`.
pub const MAX_TEXT: usize = 64 * 1024;

/// Longest first line kept of a tool result.
pub const MAX_FIRST_LINE: usize = 200;

/// What the agent's final `result` line said (kept to decide how the run
/// ends).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentOutcome {
    /// `success`, `error_max_turns`, `error_during_execution`,
    /// `error_max_budget_usd`, …
    pub subtype: String,
    /// True when the run failed — also under `subtype: "success"`.
    pub is_error: bool,
    /// Turns taken.
    pub turns: u32,
    /// HTTP status of the API error that ended it, when one did.
    pub api_error_status: Option<u16>,
    /// The result text (an error message when `is_error`), cut.
    pub result: Option<String>,
}

/// Incremental parser for one agent process's stdout. Feed it every stdout
/// line in order.
#[derive(Debug, Default)]
pub struct StreamJsonParser {
    pending: Option<String>,
    overflow: bool,
    outcome: Option<AgentOutcome>,
}

impl StreamJsonParser {
    /// A parser with nothing seen.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last `result` seen, if any.
    pub fn outcome(&self) -> Option<&AgentOutcome> {
        self.outcome.as_ref()
    }

    /// Whether it holds nothing: no outcome, no part of a split line (as
    /// [`new`](Self::new) made it). A holder may then drop it and make a
    /// new one for the next line without losing anything.
    pub fn holds_nothing(&self) -> bool {
        // (An overflowing line is a pending one.)
        self.pending.is_none() && self.outcome.is_none()
    }

    /// Forget the outcome and any split line (a new process starts).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Feed one stdout line (`partial`: it continues in the next one);
    /// returns the typed events it completes.
    pub fn feed(&mut self, line: &str, partial: bool) -> Vec<EventKind> {
        if partial || self.pending.is_some() {
            let buf = self.pending.get_or_insert_with(String::new);
            if !self.overflow && buf.len() + line.len() <= MAX_LINE {
                buf.push_str(line);
            } else {
                self.overflow = true;
                buf.clear();
            }
            if partial {
                return Vec::new();
            }
            let whole = self.pending.take().unwrap_or_default();
            if std::mem::take(&mut self.overflow) {
                return Vec::new();
            }
            return self.parse(&whole);
        }
        self.parse(line)
    }

    fn parse(&mut self, line: &str) -> Vec<EventKind> {
        let trimmed = line.trim();
        if !trimmed.starts_with('{') {
            return Vec::new();
        }
        let Ok(v) = serde_json::from_str::<Value>(trimmed) else {
            return Vec::new();
        };
        let Some(kind) = v.get("type").and_then(Value::as_str) else {
            return Vec::new();
        };
        match kind {
            "system" if v["subtype"] == "init" => vec![EventKind::AgentInit(Box::new(AgentInit {
                conversation: str_of(&v["session_id"]),
                model: str_of(&v["model"]),
                tools: v["tools"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|t| t.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
                version: str_of(&v["claude_code_version"]),
                permission_mode: str_of(&v["permissionMode"]),
            }))],
            "assistant" => {
                let mut out = Vec::new();
                for block in blocks(&v) {
                    match block["type"].as_str() {
                        Some("text") => out.push(EventKind::AgentText {
                            text: cut(block["text"].as_str().unwrap_or_default()),
                        }),
                        Some("tool_use") => out.push(EventKind::ToolUse(Box::new(ToolUse {
                            id: str_of(&block["id"]),
                            tool: str_of(&block["name"]),
                            input: shorten(&block["input"]),
                        }))),
                        _ => {}
                    }
                }
                if let Some(error) = v.get("error").filter(|e| !e.is_null()) {
                    // `"error": "rate_limit"`; its text block says
                    // `API Error: Request rejected (429) · …`.
                    let error = error
                        .as_str()
                        .map_or_else(|| error.to_string(), String::from);
                    let text = blocks(&v)
                        .find_map(|b| b["text"].as_str())
                        .unwrap_or_default();
                    let status = status_in(text);
                    out.push(EventKind::AgentApiError(Box::new(AgentApiError {
                        code: api_error_code(Some(&error), status).into(),
                        status,
                        message: cut_to(
                            if text.is_empty() { &error } else { text },
                            MAX_FIRST_LINE,
                        ),
                        retry_in_ms: None,
                        attempt: None,
                    })));
                }
                out
            }
            "system" if v["subtype"] == "api_retry" => {
                let status = v["error_status"]
                    .as_u64()
                    .and_then(|s| u16::try_from(s).ok());
                let error = v["error"].as_str();
                vec![EventKind::AgentApiError(Box::new(AgentApiError {
                    code: api_error_code(error, status).into(),
                    status,
                    message: cut_to(error.unwrap_or("API error"), MAX_FIRST_LINE),
                    retry_in_ms: v["retry_delay_ms"].as_u64(),
                    attempt: v["attempt"].as_u64().map(|n| n as u32),
                }))]
            }
            "rate_limit_event" if v["rate_limit_info"]["status"] == "rejected" => {
                let info = &v["rate_limit_info"];
                let kind = info["rateLimitType"].as_str().unwrap_or("rate limit");
                let resets_at = info["resetsAt"].as_u64();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                vec![EventKind::AgentApiError(Box::new(AgentApiError {
                    code: "rate_limited".into(),
                    status: None,
                    message: match resets_at {
                        Some(at) => format!(
                            "{kind} limit reached; resets in {} s",
                            at.saturating_sub(now)
                        ),
                        None => format!("{kind} limit reached"),
                    },
                    retry_in_ms: resets_at.map(|at| at.saturating_sub(now) * 1000),
                    attempt: None,
                }))]
            }
            "command_lifecycle" => vec![EventKind::AgentTurn {
                command: str_of(&v["command_uuid"]),
                state: str_of(&v["state"]),
            }],
            "user" if v["isReplay"] == true => {
                let text = match &v["message"]["content"] {
                    Value::String(s) => s.clone(),
                    other => blocks_text(other),
                };
                vec![EventKind::AgentPrompt {
                    command: str_of(&v["uuid"]),
                    text: cut(&text),
                }]
            }
            "user" => blocks(&v)
                .filter(|b| b["type"] == "tool_result")
                .map(|b| {
                    let (size, first_line) = summarise(&b["content"]);
                    EventKind::ToolResult {
                        id: str_of(&b["tool_use_id"]),
                        is_error: b["is_error"].as_bool().unwrap_or(false),
                        size,
                        first_line,
                    }
                })
                .collect(),
            "result" => {
                let usage = &v["usage"];
                let outcome = AgentOutcome {
                    subtype: str_of(&v["subtype"]),
                    is_error: v["is_error"].as_bool().unwrap_or(false),
                    turns: v["num_turns"].as_u64().unwrap_or(0) as u32,
                    api_error_status: v["api_error_status"]
                        .as_u64()
                        .and_then(|s| u16::try_from(s).ok()),
                    result: v["result"].as_str().map(cut),
                };
                let ev = EventKind::AgentResult(Box::new(AgentResult {
                    subtype: outcome.subtype.clone(),
                    is_error: outcome.is_error,
                    turns: outcome.turns,
                    cost_usd: Usd(v["total_cost_usd"].as_f64().unwrap_or(0.0)),
                    duration_ms: v["duration_ms"].as_u64().unwrap_or(0),
                    usage: AgentUsage {
                        input_tokens: usage["input_tokens"].as_u64().unwrap_or(0),
                        output_tokens: usage["output_tokens"].as_u64().unwrap_or(0),
                        cache_read_input_tokens: usage["cache_read_input_tokens"]
                            .as_u64()
                            .unwrap_or(0),
                        cache_creation_input_tokens: usage["cache_creation_input_tokens"]
                            .as_u64()
                            .unwrap_or(0),
                    },
                    result: outcome.result.clone(),
                    terminal_reason: v["terminal_reason"].as_str().map(String::from),
                    api_error_status: outcome.api_error_status,
                }));
                self.outcome = Some(outcome);
                vec![ev]
            }
            other => {
                let message_type = match v["subtype"].as_str() {
                    Some(sub) => format!("{other}/{sub}"),
                    None => other.to_string(),
                };
                vec![EventKind::AgentUnknown { message_type }]
            }
        }
    }
}

/// `rate_limited` for HTTP 429 or an error named `rate_limit`, else
/// `api_error` (the codes of [`crate::Error::AgentFailed`]).
fn api_error_code(error: Option<&str>, status: Option<u16>) -> &'static str {
    match (error, status) {
        (_, Some(429)) => "rate_limited",
        (Some(e), None) if e.contains("rate_limit") => "rate_limited",
        _ => "api_error",
    }
}

/// The HTTP status in Claude Code's `API Error: … (429) …` text.
fn status_in(text: &str) -> Option<u16> {
    let rest = text.strip_prefix("API Error")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .find(|d| d.len() == 3)
        .and_then(|d| d.parse().ok())
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn blocks(v: &Value) -> impl Iterator<Item = &Value> {
    v["message"]["content"]
        .as_array()
        .map(|a| a.iter())
        .into_iter()
        .flatten()
}

/// `s` cut to [`MAX_TEXT`] bytes (at a character boundary) with `…`.
fn cut(s: &str) -> String {
    cut_to(s, MAX_TEXT)
}

fn cut_to(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A tool input with every long string cut.
fn shorten(v: &Value) -> Value {
    match v {
        Value::String(s) if s.len() > MAX_TEXT => Value::String(cut(s)),
        Value::Array(a) => Value::Array(a.iter().map(shorten).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), shorten(v))).collect()),
        other => other.clone(),
    }
}

/// Size in bytes and first line of a tool result's content (a string, or
/// a list of `{"type":"text","text":…}` blocks).
fn summarise(content: &Value) -> (u64, String) {
    let texts: Vec<&str> = match content {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(|i| i["text"].as_str()).collect(),
        _ => Vec::new(),
    };
    let size = texts.iter().map(|t| t.len() as u64).sum();
    let line = texts
        .iter()
        .find(|t| !t.is_empty())
        .and_then(|t| t.lines().next())
        .unwrap_or_default();
    (size, cut_to(line, MAX_FIRST_LINE))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines recorded from Claude Code 2.1.332 against the scripted model
    /// server (long fields trimmed).
    const INIT: &str = r#"{"type":"system","subtype":"init","cwd":"/home/agent","session_id":"f6a692dc-741b-4ecf-a64c-843b2be980c7","tools":["Task","Bash","Edit","Write"],"mcp_servers":[],"model":"claude-opus-5-5","permissionMode":"bypassPermissions","apiKeySource":"ANTHROPIC_API_KEY","claude_code_version":"2.1.332","uuid":"05f37f16-bb73-4d68-9cec-1b3cd76c8d37"}"#;
    const TOOL_USE: &str = r#"{"type":"assistant","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-opus-5-5","content":[{"type":"tool_use","id":"toolu_1","name":"Bash","input":{"command":"echo hi > /tmp/x && cat /tmp/x","description":"write"}}],"stop_reason":null,"usage":{"input_tokens":10,"output_tokens":1}},"parent_tool_use_id":null,"session_id":"f6a692dc-741b-4ecf-a64c-843b2be980c7"}"#;
    const TOOL_RESULT: &str = r#"{"type":"user","message":{"role":"user","content":[{"tool_use_id":"toolu_1","type":"tool_result","content":"hi","is_error":false}]},"parent_tool_use_id":null,"session_id":"f6a692dc-741b-4ecf-a64c-843b2be980c7","tool_use_result":{"stdout":"hi","stderr":"","interrupted":false}}"#;
    const TEXT: &str = r#"{"type":"assistant","message":{"id":"msg_3","type":"message","role":"assistant","model":"claude-opus-5-5","content":[{"type":"thinking","thinking":"hmm"},{"type":"text","text":"All done."}]},"session_id":"f6a692dc-741b-4ecf-a64c-843b2be980c7"}"#;
    const RESULT: &str = r#"{"duration_api_ms":1013,"stop_reason":"end_turn","session_id":"f6a692dc-741b-4ecf-a64c-843b2be980c7","total_cost_usd":0.00028000000000000003,"usage":{"input_tokens":20,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":10},"permission_denials":[],"terminal_reason":"completed","is_error":false,"num_turns":2,"subtype":"success","api_error_status":null,"result":"All done.","type":"result","duration_ms":1805}"#;

    #[test]
    fn it_holds_nothing_between_whole_lines_until_the_result() {
        let mut p = StreamJsonParser::new();
        assert!(p.holds_nothing());
        p.feed(INIT, false);
        p.feed("plain text", false);
        assert!(p.holds_nothing(), "whole lines leave nothing behind");
        let (head, tail) = TOOL_USE.split_at(40);
        p.feed(head, true);
        assert!(!p.holds_nothing(), "the first part of a split line is held");
        assert_eq!(p.feed(tail, false).len(), 1);
        assert!(p.holds_nothing());
        p.feed(RESULT, false);
        assert!(!p.holds_nothing(), "the result is held for the exit");
    }

    #[test]
    fn a_recorded_run_becomes_typed_events_in_order() {
        let mut p = StreamJsonParser::new();
        let mut events = Vec::new();
        for line in [
            "Welcome! (a line that is not JSON)",
            INIT,
            TOOL_USE,
            TOOL_RESULT,
            "{not json either",
            TEXT,
            RESULT,
        ] {
            events.extend(p.feed(line, false));
        }
        let names: Vec<&str> = events.iter().map(EventKind::name).collect();
        assert_eq!(
            names,
            [
                "agent_init",
                "tool_use",
                "tool_result",
                "agent_text",
                "agent_result"
            ]
        );
        match &events[0] {
            EventKind::AgentInit(boxed) => {
                let crate::event::AgentInit {
                    conversation,
                    model,
                    tools,
                    version,
                    permission_mode,
                } = &**boxed;
                assert_eq!(conversation, "f6a692dc-741b-4ecf-a64c-843b2be980c7");
                assert_eq!(model, "claude-opus-5-5");
                assert_eq!(tools, &["Task", "Bash", "Edit", "Write"]);
                assert_eq!(version, "2.1.332");
                assert_eq!(permission_mode, "bypassPermissions");
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(
            events[1],
            EventKind::ToolUse(Box::new(ToolUse {
                id: "toolu_1".into(),
                tool: "Bash".into(),
                input: serde_json::json!({"command": "echo hi > /tmp/x && cat /tmp/x", "description": "write"}),
            }))
        );
        assert_eq!(
            events[2],
            EventKind::ToolResult {
                id: "toolu_1".into(),
                is_error: false,
                size: 2,
                first_line: "hi".into()
            }
        );
        assert_eq!(
            events[3],
            EventKind::AgentText {
                text: "All done.".into()
            }
        );
        match &events[4] {
            EventKind::AgentResult(boxed) => {
                let crate::event::AgentResult {
                    subtype,
                    is_error,
                    turns,
                    cost_usd,
                    duration_ms,
                    usage,
                    result,
                    terminal_reason,
                    api_error_status,
                } = &**boxed;
                assert_eq!(subtype, "success");
                assert!(!is_error);
                assert_eq!(*turns, 2);
                assert!((cost_usd.0 - 0.00028).abs() < 1e-12);
                assert_eq!(*duration_ms, 1805);
                assert_eq!((usage.input_tokens, usage.output_tokens), (20, 10));
                assert_eq!(result.as_deref(), Some("All done."));
                assert_eq!(terminal_reason.as_deref(), Some("completed"));
                assert_eq!(*api_error_status, None);
            }
            e => panic!("{e:?}"),
        }
        let outcome = p.outcome().unwrap();
        assert!(!outcome.is_error);
        assert_eq!(outcome.turns, 2);
    }

    #[test]
    fn an_error_under_success_is_an_error() {
        let mut p = StreamJsonParser::new();
        p.feed(
            r#"{"type":"result","subtype":"success","is_error":true,"num_turns":1,"api_error_status":529,"result":"API Error: 529 overloaded","total_cost_usd":0}"#,
            false,
        );
        let o = p.outcome().unwrap();
        assert!(o.is_error);
        assert_eq!(o.subtype, "success");
        assert_eq!(o.api_error_status, Some(529));
    }

    #[test]
    fn unknown_types_are_typed_as_unknown() {
        let mut p = StreamJsonParser::new();
        assert_eq!(
            p.feed(r#"{"type":"rate_limit_event","rate_limit_info":{}}"#, false),
            [EventKind::AgentUnknown {
                message_type: "rate_limit_event".into()
            }]
        );
        assert_eq!(
            p.feed(r#"{"type":"system","subtype":"compact_boundary"}"#, false),
            [EventKind::AgentUnknown {
                message_type: "system/compact_boundary".into()
            }]
        );
        // JSON without a type, arrays, numbers: raw output only.
        for line in [r#"{"no":"type"}"#, "[1,2]", "42", "", "   "] {
            assert!(p.feed(line, false).is_empty(), "{line}");
        }
    }

    #[test]
    fn a_5_mib_tool_result_split_at_the_line_cap_is_summarised() {
        let big = format!("first line\n{}", "x".repeat(5 * 1024 * 1024));
        let line = serde_json::json!({
            "type": "user",
            "message": {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_9", "is_error": true,
                 "content": [{"type": "text", "text": big}]}
            ]}
        })
        .to_string();
        // As the runtime delivers it: 1 MiB parts, the last one whole.
        let cap = 1024 * 1024;
        let parts: Vec<&str> = line
            .as_bytes()
            .chunks(cap)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let mut p = StreamJsonParser::new();
        let mut events = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            events.extend(p.feed(part, i + 1 < parts.len()));
        }
        assert_eq!(
            events,
            [EventKind::ToolResult {
                id: "toolu_9".into(),
                is_error: true,
                size: big.len() as u64,
                first_line: "first line".into(),
            }]
        );
        let small = std::mem::size_of_val(&events[0]) + 64;
        assert!(format!("{:?}", events[0]).len() < small + 200);
        // And the parser is ready for the next line.
        assert_eq!(p.feed(TEXT, false).len(), 1);
    }

    #[test]
    fn a_line_over_the_limit_is_left_as_raw_output() {
        let mut p = StreamJsonParser::new();
        let chunk = "y".repeat(1024 * 1024);
        assert!(p
            .feed("{\"type\":\"result\",\"result\":\"", true)
            .is_empty());
        for _ in 0..(MAX_LINE / chunk.len() + 1) {
            assert!(p.feed(&chunk, true).is_empty());
        }
        assert!(p.feed("\"}", false).is_empty());
        assert!(p.outcome().is_none());
        assert_eq!(p.feed(TOOL_RESULT, false).len(), 1);
    }

    #[test]
    fn long_texts_and_inputs_are_cut() {
        let long = "é".repeat(MAX_TEXT);
        let line = serde_json::json!({"type": "assistant", "message": {"content": [
            {"type": "text", "text": long},
            {"type": "tool_use", "id": "t", "name": "Write", "input": {"file_path": "a", "content": long}}
        ]}})
        .to_string();
        let events = StreamJsonParser::new().feed(&line, false);
        let EventKind::AgentText { text } = &events[0] else {
            panic!()
        };
        assert!(text.len() <= MAX_TEXT + 3 && text.ends_with('…'));
        let EventKind::ToolUse(tool) = &events[1] else {
            panic!()
        };
        let input = &tool.input;
        assert_eq!(input["file_path"], "a");
        assert!(input["content"].as_str().unwrap().len() <= MAX_TEXT + 3);
    }

    /// Lines Claude Code 2.1.332 printed against the scripted model server
    /// answering 429 (with retries, then with CLAUDE_CODE_MAX_RETRIES=0).
    const API_RETRY: &str = r#"{"type":"system","subtype":"api_retry","attempt":1,"max_retries":10,"retry_delay_ms":1025,"error_status":429,"error":"rate_limit","session_id":"228137a7-8f36-4519-87ad-b6e827e38333","uuid":"5dfae2d0-144f-46e1-931a-f4d8587abef0"}"#;
    const ASSISTANT_ERROR: &str = r#"{"type":"assistant","message":{"diagnostics":null,"id":"4120ba3f-083f-4ca3-89a3-29e7f177e3fc","container":null,"model":"<synthetic>","role":"assistant","stop_details":null,"stop_reason":"stop_sequence","stop_sequence":"","type":"message","usage":{"output_tokens_details":null,"input_tokens":0,"output_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"server_tool_use":{"web_search_requests":0,"web_fetch_requests":0},"service_tier":null,"cache_creation":{"ephemeral_1h_input_tokens":0,"ephemeral_5m_input_tokens":0},"inference_geo":null,"iterations":null,"speed":null,"fallback_credit":null},"content":[{"type":"text","text":"API Error: Request rejected (429) · scripted 429 (rate_limit_error)"}],"context_management":null},"parent_tool_use_id":null,"session_id":"c3235a5c-6d77-4a3f-8cd6-b3c53e7fa2db","uuid":"468b2adf-9977-4855-b662-eff1b38ef897","timestamp":"2026-11-30T23:33:47.624Z","error":"rate_limit","is_api_error_message":true,"api_error_status":429,"api_error_type":"rate_limit_error"}"#;

    #[test]
    fn api_errors_and_rate_limits_are_typed() {
        let mut p = StreamJsonParser::new();
        assert_eq!(
            p.feed(API_RETRY, false),
            [EventKind::AgentApiError(Box::new(AgentApiError {
                code: "rate_limited".into(),
                status: Some(429),
                message: "rate_limit".into(),
                retry_in_ms: Some(1025),
                attempt: Some(1),
            }))]
        );
        let evs = p.feed(ASSISTANT_ERROR, false);
        assert_eq!(evs.len(), 2, "{evs:?}");
        assert!(matches!(&evs[0], EventKind::AgentText { text } if text.contains("(429)")));
        assert_eq!(
            evs[1],
            EventKind::AgentApiError(Box::new(AgentApiError {
                code: "rate_limited".into(),
                status: Some(429),
                message: "API Error: Request rejected (429) · scripted 429 (rate_limit_error)"
                    .into(),
                retry_in_ms: None,
                attempt: None,
            }))
        );
        // 529 overloaded, retried by the agent: an api_error.
        let overloaded = API_RETRY
            .replace("\"error_status\":429", "\"error_status\":529")
            .replace("\"rate_limit\"", "\"overloaded\"");
        assert!(matches!(
            &p.feed(&overloaded, false)[..],
            [EventKind::AgentApiError(e)] if e.code == "api_error" && e.status == Some(529)
        ));
        // A subscription's rate limit: rejected is an error, allowed is not.
        let rejected = r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1,"rateLimitType":"five_hour"},"session_id":"s"}"#;
        assert!(matches!(
            &p.feed(rejected, false)[..],
            [EventKind::AgentApiError(e)]
                if e.code == "rate_limited" && e.retry_in_ms == Some(0) && e.message.starts_with("five_hour limit reached")
        ));
        let allowed = rejected.replace("rejected", "allowed");
        assert_eq!(
            p.feed(&allowed, false),
            [EventKind::AgentUnknown {
                message_type: "rate_limit_event".into()
            }]
        );
        assert!(p.outcome().is_none());
    }
}
