//! A scripted turn as the Messages API sends it: the server-sent events of
//! a streamed answer, the JSON of a non-streamed one, or an error body.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

use super::script::{Block, HttpError, Turn};

/// Message and tool ids, unique for the life of the process (so unique in
/// every conversation, as Claude Code requires).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id(prefix: &str) -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_scripted{n:012}")
}

/// One server-sent event.
pub(crate) fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// The events of a streamed answer, in order: `message_start`, per block
/// `content_block_start` / `_delta` / `_stop`, `message_delta` (with the
/// stop reason and output tokens), `message_stop`. A `malformed` turn gets
/// an event with non-JSON data right after `message_start`.
pub(crate) fn stream_events(turn: &Turn, model: &str) -> Vec<String> {
    let mut out = vec![event(
        "message_start",
        &json!({
            "type": "message_start",
            "message": {
                "id": next_id("msg"), "type": "message", "role": "assistant",
                "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": turn.usage.input_tokens, "output_tokens": 1}
            }
        }),
    )];
    if turn.malformed {
        out.push("event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": \n\n".to_string());
    }
    for (index, block) in turn.content.iter().enumerate() {
        let (start, delta) = match block {
            Block::Text { text } => (
                json!({"type": "text", "text": ""}),
                json!({"type": "text_delta", "text": text}),
            ),
            Block::ToolUse { name, input } => (
                json!({"type": "tool_use", "id": next_id("toolu"), "name": name, "input": {}}),
                json!({"type": "input_json_delta", "partial_json": input.to_string()}),
            ),
        };
        out.push(event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        out.push(event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        ));
        out.push(event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        ));
    }
    out.push(event(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": turn.stop_reason(), "stop_sequence": null},
            "usage": {"output_tokens": turn.usage.output_tokens}
        }),
    ));
    out.push(event("message_stop", &json!({"type": "message_stop"})));
    out
}

/// A non-streamed answer (`stream: false`).
pub(crate) fn message(turn: &Turn, model: &str) -> Value {
    let content: Vec<Value> = turn
        .content
        .iter()
        .map(|b| match b {
            Block::Text { text } => json!({"type": "text", "text": text}),
            Block::ToolUse { name, input } => {
                json!({"type": "tool_use", "id": next_id("toolu"), "name": name, "input": input})
            }
        })
        .collect();
    json!({
        "id": next_id("msg"), "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": turn.stop_reason(), "stop_sequence": null,
        "usage": {"input_tokens": turn.usage.input_tokens, "output_tokens": turn.usage.output_tokens}
    })
}

/// The body of an error answer.
pub(crate) fn error_body(e: &HttpError) -> Value {
    let message = e
        .message
        .clone()
        .unwrap_or_else(|| format!("scripted {} ({})", e.status, e.kind()));
    json!({"type": "error", "error": {"type": e.kind(), "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(ev: &str) -> Value {
        let line = ev.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn a_tool_turn_streams_the_documented_events_with_unique_ids() {
        let turn = Turn::bash("ls");
        let evs = stream_events(&turn, "m");
        let names: Vec<&str> = evs
            .iter()
            .map(|e| e.lines().next().unwrap().trim_start_matches("event: "))
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let start = data(&evs[1]);
        assert_eq!(start["content_block"]["name"], "Bash");
        let delta = data(&evs[2]);
        let input: Value =
            serde_json::from_str(delta["delta"]["partial_json"].as_str().unwrap()).unwrap();
        assert_eq!(input, json!({"command": "ls"}));
        assert_eq!(data(&evs[4])["delta"]["stop_reason"], "tool_use");
        let again = stream_events(&turn, "m");
        assert_ne!(
            data(&evs[0])["message"]["id"],
            data(&again[0])["message"]["id"]
        );
        assert_ne!(
            start["content_block"]["id"],
            data(&again[1])["content_block"]["id"]
        );
    }

    #[test]
    fn a_malformed_turn_has_an_event_that_is_not_json() {
        let turn = Turn {
            malformed: true,
            ..Turn::text("x")
        };
        let evs = stream_events(&turn, "m");
        let line = evs[1].lines().nth(1).unwrap().trim_start_matches("data: ");
        assert!(serde_json::from_str::<Value>(line).is_err());
    }
}
