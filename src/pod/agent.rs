//! The agent's command line.
//!
//! A start runs `<agentCommand> -p --session-id <uuid> -- <prompt>` and a
//! resume `<agentCommand> -p --resume <uuid> -- <prompt>`. The `--` ends the
//! agent's options, so a prompt that begins with `-` (say
//! `--dangerously-skip-permissions`) reaches the agent as text, never as
//! one of its flags.

/// The argv that starts a conversation: `agent` (the pod's
/// [`agentCommand`](super::PodConfig::agent_command)) followed by
/// `-p --session-id <conversation> -- <prompt>`.
pub(crate) fn start_argv(agent: &[String], conversation: &str, prompt: &str) -> Vec<String> {
    with_prompt(agent, ["-p", "--session-id", conversation], prompt)
}

/// The argv that continues a conversation: `agent` followed by
/// `-p --resume <conversation> -- <prompt>`.
pub(crate) fn resume_argv(agent: &[String], conversation: &str, prompt: &str) -> Vec<String> {
    with_prompt(agent, ["-p", "--resume", conversation], prompt)
}

fn with_prompt(agent: &[String], options: [&str; 3], prompt: &str) -> Vec<String> {
    let mut argv = agent.to_vec();
    argv.extend(options.iter().map(|s| s.to_string()));
    argv.push("--".into());
    argv.push(prompt.into());
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_that_looks_like_an_option_comes_after_the_end_of_options() {
        let agent = vec!["claude".to_string(), "--verbose".to_string()];
        let prompt = "--dangerously-skip-permissions";
        assert_eq!(
            start_argv(&agent, "u-1", prompt),
            [
                "claude",
                "--verbose",
                "-p",
                "--session-id",
                "u-1",
                "--",
                prompt
            ]
        );
        assert_eq!(
            resume_argv(&agent, "u-1", "-x"),
            ["claude", "--verbose", "-p", "--resume", "u-1", "--", "-x"]
        );
    }
}
