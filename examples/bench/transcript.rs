//! A synthetic Claude Code transcript (`--output-format stream-json
//! --verbose`) of realistic line sizes, for measuring the fan-out with the
//! agent-event parser at work (issue 14, "Also measure").
//!
//! Every line completes exactly one agent event: `system/init` first,
//! `result` last, and in between a repeating turn of assistant text
//! (≈ 600 B), a tool call (≈ 300 B) and its result (≈ 1 KB; one result
//! in [`BIG_EVERY`] a 30 KB file read instead). So a session of `n`
//! lines delivers `n` `output` events and `n` agent events, each agent
//! event right after its line.

/// One tool result in this many is a 30 KB one.
pub const BIG_EVERY: usize = 10;

/// Size of the big tool results.
pub const BIG_RESULT: usize = 30 * 1024;

/// The transcript: `n` (at least 2) newline-terminated stream-json lines.
pub fn transcript(n: usize) -> Vec<u8> {
    assert!(
        n >= 2,
        "a transcript has at least an init and a result line"
    );
    let mut out = String::new();
    out.push_str(
        r#"{"type":"system","subtype":"init","cwd":"/workspace","session_id":"6f1c2b9e-3d4a-4c55-9a61-0b7e2f8d1c3a","tools":["Bash","Edit","Glob","Grep","Read","Write","TodoWrite"],"mcp_servers":[],"model":"claude-sonnet-4-5","permissionMode":"bypassPermissions","claude_code_version":"2.0.0","uuid":"0d9c7e1a-5b2f-4e3d-8c6a-1f4b2a9d7e50"}"#,
    );
    out.push('\n');
    let prose = "I'll look at how the parser handles a trailing comma in the config file, then add a test that reproduces the reported failure before changing anything. ".repeat(4);
    let small = "fn parse(input: &str) -> Result<Config, Error> {\\n    let mut fields = Vec::new();\\n    for line in input.lines() {\\n        fields.push(line.trim());\\n    }\\n".repeat(5);
    let big = "x".repeat(BIG_RESULT);
    for i in 1..n - 1 {
        let line = match i % 3 {
            1 => format!(
                r#"{{"type":"assistant","message":{{"id":"msg_{i:08}","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{{"type":"text","text":"{prose}"}}],"stop_reason":null,"usage":{{"input_tokens":1200,"output_tokens":180}}}},"parent_tool_use_id":null,"session_id":"6f1c2b9e-3d4a-4c55-9a61-0b7e2f8d1c3a"}}"#
            ),
            2 => format!(
                r#"{{"type":"assistant","message":{{"id":"msg_{i:08}","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{{"type":"tool_use","id":"toolu_{i:08}","name":"Read","input":{{"file_path":"/workspace/src/config/parser.rs","offset":120,"limit":400}}}}],"stop_reason":"tool_use"}},"session_id":"6f1c2b9e-3d4a-4c55-9a61-0b7e2f8d1c3a"}}"#
            ),
            _ => {
                let content = if (i / 3) % BIG_EVERY == 0 {
                    &big
                } else {
                    &small
                };
                format!(
                    r#"{{"type":"user","message":{{"role":"user","content":[{{"tool_use_id":"toolu_{:08}","type":"tool_result","content":"{content}","is_error":false}}]}},"session_id":"6f1c2b9e-3d4a-4c55-9a61-0b7e2f8d1c3a"}}"#,
                    i - 1
                )
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(
        r#"{"type":"result","subtype":"success","is_error":false,"duration_ms":48211,"duration_api_ms":40110,"num_turns":12,"result":"Fixed the trailing-comma bug and added a regression test.","session_id":"6f1c2b9e-3d4a-4c55-9a61-0b7e2f8d1c3a","total_cost_usd":0.1834,"usage":{"input_tokens":51200,"output_tokens":3900}}"#,
    );
    out.push('\n');
    out.into_bytes()
}
