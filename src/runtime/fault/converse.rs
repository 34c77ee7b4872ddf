//! The answers of [`Step::Converse`](super::script::Step::Converse): what a
//! stand-in for Claude Code with `--input-format stream-json` prints for
//! one user message on its stdin.

use std::time::Duration;

/// The stream-json lines answering input line `line`, turn `n` (from 1),
/// as Claude Code prints them: `command_lifecycle` `started` (when the
/// message has a `uuid`), the message echoed (`--replay-user-messages`),
/// an `assistant` text, a `result`, `command_lifecycle` `completed`. A line that is not a user message
/// (`{"type":"user","message":{"content":…}}`) gets an error result, as a
/// malformed message would.
pub(super) fn answer(line: &[u8], n: usize, turn: Duration) -> Vec<u8> {
    let prompt = serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .filter(|v| v["type"] == "user")
        .and_then(|v| match &v["message"]["content"] {
            serde_json::Value::String(s) => Some(s.clone()),
            other => other.as_array().map(|blocks| {
                blocks
                    .iter()
                    .filter_map(|b| b["text"].as_str())
                    .collect::<Vec<_>>()
                    .join("")
            }),
        });
    let command = serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v["uuid"].as_str().map(String::from));
    let (text, is_error) = match &prompt {
        Some(p) => (format!("answer {n}: {p}"), false),
        None => (format!("turn {n}: not a stream-json user message"), true),
    };
    let lifecycle = |state: &str| {
        command.as_ref().map(
            |c| serde_json::json!({"type": "command_lifecycle", "command_uuid": c, "state": state}),
        )
    };
    let replay = prompt.as_ref().map(|p| {
        serde_json::json!({"type": "user", "message": {"role": "user", "content": p},
                           "isReplay": true, "uuid": command})
    });
    let assistant = serde_json::json!({
        "type": "assistant",
        "message": {"id": format!("msg_fault_{n}"), "role": "assistant",
                    "content": [{"type": "text", "text": text}]},
    });
    let result = serde_json::json!({
        "type": "result",
        "subtype": "success",
        "is_error": is_error,
        "num_turns": 1,
        "total_cost_usd": 0.001,
        "duration_ms": turn.as_millis() as u64,
        "result": text,
    });
    let mut out = Vec::new();
    let lines = [
        lifecycle("started"),
        replay,
        Some(assistant),
        Some(result),
        lifecycle("completed"),
    ];
    for line in lines.into_iter().flatten() {
        out.extend(serde_json::to_vec(&line).expect("a JSON value serialises"));
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_message_gets_an_answer_and_a_result() {
        let msg = crate::agent::user_message("hi there", "c", "u-7");
        let out = answer(&msg[..msg.len() - 1], 2, Duration::ZERO);
        let lines: Vec<serde_json::Value> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0]["state"], "started");
        assert_eq!(lines[0]["command_uuid"], "u-7");
        assert_eq!(lines[1]["isReplay"], true);
        assert_eq!(lines[3]["type"], "result");
        assert_eq!(lines[3]["is_error"], false);
        assert_eq!(lines[3]["result"], "answer 2: hi there");
        assert_eq!(lines[4]["state"], "completed");
        let bad = answer(b"hello", 1, Duration::ZERO);
        assert!(String::from_utf8(bad)
            .unwrap()
            .contains("\"is_error\":true"));
    }
}
